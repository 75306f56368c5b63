"""Where runs execute: worker processes on this machine, or Ray tasks on a cluster.

Either way the driver alone writes the results store, one transaction per finished run, as
results come back; workers only write inside their own run directories. Runs already finished in
the store are skipped, so re-running a sweep does only what is left.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Sequence

from tqdm.auto import tqdm

from bench.harness.deadline import TimeLimit
from bench.harness.runner import RunSpec, execute, read_progress
from bench.harness.store import ResultsStore, RunResult
from policies import registry
from policies.errors import ConfigError

EXECUTORS = ("local", "ray")


def threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def _shared(spec: RunSpec) -> set[str]:
    try:
        return set(getattr(registry.get(spec.algorithm), "shared_stages", ()))
    except ConfigError:
        return set()


def next_run(queue: Sequence[RunSpec], running: Collection[RunSpec]) -> int:
    """Index of the queued run to start next: the first whose shared stages (same dataset, seed and preset) no
    running run may be training, since it would wait on that stage's lock with its worker idle (the UMaze's CTRL
    seed 2 waited ten minutes for DDPO's behaviour model); the first in spec order when every one may wait."""
    for i, spec in enumerate(queue):
        if not any(r.dataset == spec.dataset and r.seed == spec.seed and r.preset == spec.preset
                   and _shared(r) & _shared(spec) for r in running):
            return i
    return 0


def _local(specs: Sequence[RunSpec], results: Path, workers: int, device: str | None,
           admit: Callable[[RunSpec], bool] = lambda spec: True) -> Iterator[RunResult]:
    """Runs in spec order, `workers` at a time, a run that would wait on a running one's shared stage passed over
    for the next (`next_run`); each is submitted only when a worker is free, so that `admit` (a time limit)
    decides with the time then left."""
    if workers <= 1:
        for spec in specs:
            if admit(spec):
                yield execute(spec, results, 0, device)
        return
    ctx = multiprocessing.get_context("spawn")  # fork after torch's thread pools start can deadlock
    threads = threads_per_worker(workers)
    pool = ProcessPoolExecutor(workers, mp_context=ctx)
    queue, running = list(specs), {}

    def fill() -> None:
        while queue and len(running) < workers:
            spec = queue.pop(next_run(queue, running.values()))
            if admit(spec):
                running[pool.submit(execute, spec, results, threads, device)] = spec

    try:
        fill()
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                spec = running.pop(future)
                try:
                    result = future.result()
                except Exception:  # the worker process itself died (killed, out of memory, a crash in C)
                    result = crashed(spec)
                fill()  # the freed worker starts its next run before the driver records this one
                yield result
    except BaseException:  # Ctrl-C or an error in the driver: stop the workers now; their checkpoints stay
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _ray(specs: Sequence[RunSpec], results: Path, workers: int, device: str | None,
         address: str | None) -> Iterator[RunResult]:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("the ray executor needs Ray: pip install 'diffbench[ray]'") from exc
    if not ray.is_initialized():
        start_ray(address, log_to_driver=True)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 and device != "cpu" else 0
    threads = threads_per_worker(workers) if address in (None, "local") else 1
    task = ray.remote(num_cpus=threads, num_gpus=gpus, max_retries=0)(execute)
    # results must be a path every node sees (a shared filesystem) when the cluster has several nodes
    pending = [task.remote(spec, str(Path(results).resolve()), threads, device) for spec in specs]
    by_ref = dict(zip(pending, specs))
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                yield ray.get(done[0])
            except Exception:  # the task's worker died
                yield crashed(by_ref[done[0]])
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise


def start_ray(address: str | None = None, **kwargs: Any) -> None:
    """`ray.init`; a local instance runs its workers at the driver's priority. Ray nices its workers to 15 by
    default, so on a machine doing anything else a Ray run would get a fraction of a core and record that
    inflated wall time as its cost, where the local executor's runs would not."""
    import ray

    if address in (None, "local"):
        os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(address=address, include_dashboard=False, **kwargs)


def crashed(spec: RunSpec) -> RunResult:
    """The record of a run whose worker process died before it could report."""
    return RunResult(run_id=spec.run_id(), algorithm=spec.algorithm, dataset=spec.dataset, seed=spec.seed,
                     preset=spec.preset, config={"overrides": spec.overrides}, status="failed",
                     error="the worker process died:\n" + traceback.format_exc())


def superseded(directory: Path) -> Path:
    """Where a rerun keeps a run's old files until its new attempt finishes."""
    return directory.with_name(directory.name + ".superseded")


def set_aside(directory: Path) -> None:
    """Move a run's files aside for a rerun. A rerun cut earlier already set them aside: its new attempt's
    partial files, made by the same code, resume."""
    aside = superseded(directory)
    if not aside.exists() and directory.exists():
        directory.rename(aside)


def restore_superseded(directory: Path) -> None:
    """Put a run's old files back where a rerun set them aside (its new attempt failed or was cut)."""
    aside = superseded(directory)
    if aside.exists():
        shutil.rmtree(directory, ignore_errors=True)
        aside.rename(directory)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def job_lines(jobs: dict[str, tuple[RunSpec, Path]], since: float, finished: Collection[str],
              most: int = 3) -> list[str]:
    """Where the running jobs (run id -> spec, directory) stand, most recently heard from first:
    "qgpo umaze-dense-small-v0 s0: behaviour 4000/20000, ~3 min left" (the stage's steps left at its pace)."""
    heard = []
    for run_id, (spec, directory) in jobs.items():
        if run_id in finished:
            continue
        p = read_progress(directory, since)
        if p is not None:
            left = p["seconds"] / p["step"] * (p["steps"] - p["step"]) if p["step"] else None
            heard.append((p["time"], f"{spec.algorithm} {spec.dataset.rsplit('/', 1)[-1]} s{spec.seed}: {p['stage']} "
                                     f"{p['step']}/{p['steps']}" + (f", ~{_minutes(left)} left" if left else "")))
    return [line for _, line in sorted(heard, reverse=True)[:most]]


class _Watch(threading.Thread):
    """Every few seconds, the jobs' stages and steps on the sweep's bar: a bar at "runs 0/8" for an hour says
    nothing of a sweep whose stages train for minutes each."""

    def __init__(self, bar: tqdm, specs: Sequence[RunSpec], results: Path, every: float = 3.0):
        super().__init__(daemon=True)
        self.bar, self.specs, self.results, self.every = bar, specs, results, every
        self.since, self.finished, self.stopped = time.time(), set(), threading.Event()

    def run(self) -> None:
        jobs = {spec.run_id(): (spec, spec.directory(self.results)) for spec in self.specs}  # hashed once
        while not self.stopped.wait(self.every):
            self.bar.set_postfix_str(" | ".join(job_lines(jobs, self.since, self.finished)), refresh=True)


def run_all(specs: Sequence[RunSpec], results: Path, *, executor: str = "local", workers: int = 1,
            address: str | None = None, device: str | None = None, progress: bool = False,
            on_result: Callable[[RunResult], None] | None = None, rerun: Collection[str] = (),
            time_limit: float | None = None) -> dict[str, list]:
    """Run every spec not already finished in `results`' store; returns {"skipped", "finished", "failed",
    "deferred"}.

    `time_limit`: seconds from now; a run starts only if its projection fits in what is left (`deadline`), and
    "deferred" lists the others as (spec, projected seconds), left for the next sweep. Local executor only.

    `rerun`: algorithms whose finished runs are made again from their first own stage (after a fix to
    the code: a run's identity is its config and protocol, not the code version). Stages shared across
    algorithms are kept and restored. A rerun's old directory is moved aside (`<dir>.superseded`) and
    deleted only once the new attempt finishes and its row replaces the old one; if the new attempt fails,
    or the sweep is cut and run again without --rerun, the old files come back. Nothing is lost at any
    moment: the store's row says finished exactly while finished files are in place or set aside."""
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if time_limit is not None and executor != "local":
        raise ConfigError("--time-limit needs the local executor: a Ray cluster queues its tasks itself, so when each "
                          "would start is not known here; drop --time-limit or use --executor local")
    present = sorted({spec.algorithm for spec in specs})
    if set(rerun) - set(present):
        raise ConfigError(f"--rerun names algorithms these runs do not have: {', '.join(sorted(set(rerun) - set(present)))}"
                          f"; they have: {', '.join(present)}")
    store = ResultsStore(Path(results))
    store.check_writable()
    status = store.status()
    unique = list({spec.run_id(): spec for spec in specs}.items())
    done = lambda rid, spec: status.get(rid) == "finished" and spec.algorithm not in rerun  # noqa: E731
    skipped = [spec for rid, spec in unique if done(rid, spec)]
    todo = [spec for rid, spec in unique if not done(rid, spec)]
    for _, spec in unique:  # a rerun cut before it finished, not asked for again: its old files come back
        if spec.algorithm not in rerun:
            restore_superseded(spec.directory(results))
    for spec in todo:
        if spec.algorithm in rerun:
            set_aside(spec.directory(results))
    outcome: dict[str, list] = {"skipped": skipped, "finished": [], "failed": [], "deferred": []}
    limit = None
    if time_limit is not None:
        limit = TimeLimit(time_limit, store.table("runs"), threads_per_worker(workers), results=Path(results))
        outcome["deferred"] = limit.deferred
    stream = (_local(todo, results, workers, device, *([limit.admit] if limit else [])) if executor == "local"
              else _ray(todo, results, workers, device, address))
    bar = tqdm(total=len(todo), desc="runs", unit="run", disable=not progress or not todo)
    watch = _Watch(bar, todo, Path(results)) if progress and todo else None
    if watch is not None:
        watch.start()
    by_id = dict(unique)
    for result in stream:
        if watch is not None:
            watch.finished.add(result.run_id)
        recorded = store.record(result)
        directory = by_id[result.run_id].directory(results)
        if recorded and result.status == "finished":
            shutil.rmtree(superseded(directory), ignore_errors=True)  # the new attempt replaced the old one
        else:
            restore_superseded(directory)  # a failed rerun: the old files (and the store's old row) stay
        if not recorded and by_id[result.run_id].algorithm in rerun:  # its new attempt failed; the old row stays
            outcome["failed"].append(result)
        elif not recorded:  # it failed here, but another driver finished it: its row stays
            outcome["skipped"].append(by_id[result.run_id])
        else:
            outcome[result.status].append(result)
        bar.update()
        if on_result is not None:
            on_result(result)
    if watch is not None:
        watch.stopped.set()
        watch.join()
    bar.close()
    return outcome
