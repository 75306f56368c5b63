"""Which worker layout gives a sweep more runs per hour on this machine (`diffbench perf layout`): N single-threaded
workers side by side (the layout `diffbench sweep --workers N` uses), or one worker holding all N cores as torch
threads (`--workers 1`, the default). Each algorithm's most expensive stage is timed both ways at its preset's
networks and batch on random Walker2d-shaped transitions: the N workers started together, each on its own copy,
throughput = N x steps over the slowest one's time; the one worker on N threads, steps over its time.

Numbers: torch's CPU kernels split a matmul over threads without changing the order of any reduction on this
build, or do not; the study compares the parameters that N threads and one thread end at, so the report says
which, rather than assuming."""

from __future__ import annotations

import multiprocessing
import os
import queue
import time
from pathlib import Path

import torch

from bench.harness.provenance import code_version, made_by
from bench.studies.perf_kernels import random_transitions, steps_call
from policies import registry
from policies.errors import ConfigError

# algorithm -> (the method that trains its most expensive stage, that stage's steps field): the leaderboard's
# costliest runs (results/sweep_cost.md) and a cheap MLP for contrast
TRAINERS = {"dac": ("train", "steps"), "fql": ("train", "steps"), "diffusion_ql": ("train", "steps"),
            "idql": ("train_behaviour", "behaviour_steps"), "td3bc": ("train", "steps")}
ALGORITHMS = tuple(TRAINERS)


def _train(name: str, preset: str, steps: int, threads: int, start, out) -> None:
    """One worker: build, wait for the others, train `steps` steps; report seconds and a parameter checksum."""
    torch.set_num_threads(threads)
    t = random_transitions(10_000, "cpu")
    call = steps_call(name, preset, "cpu", steps, t, TRAINERS[name])
    steps_call(name, preset, "cpu", 2, t, TRAINERS[name])()  # first-call costs (allocation, compile) untimed
    start.wait()
    t0 = time.perf_counter()
    algo = call()
    seconds = time.perf_counter() - t0
    params = torch.cat([p.detach().flatten() for m in algo.__dict__.values() if isinstance(m, torch.nn.Module)
                        for p in m.parameters()])
    out.put((seconds, params.double().sum().item(), params.abs().double().sum().item()))


def _run(name: str, preset: str, steps: int, workers: int, threads: int) -> list[tuple[float, float, float]]:
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=_train, args=(name, preset, steps, threads, start, out)) for _ in range(workers)]
    for p in procs:
        p.start()
    results: list[tuple[float, float, float]] = []
    while len(results) < workers:  # a worker that dies never reports, and its peers wait at the barrier: stop them
        try:
            results.append(out.get(timeout=1.0))
        except queue.Empty:
            failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if failed:
                for p in procs:
                    p.terminate()
                raise RuntimeError(f"perf layout: a {name} worker exited with {failed[0]}") from None
    for p in procs:
        p.join()
    return results


def measure(algorithms: tuple[str, ...] = ALGORITHMS, preset: str = "cpu", steps: int = 30,
            cores: int | None = None) -> list[dict]:
    """Per algorithm: steps per second of the machine in each layout, and whether one thread and `cores` threads
    ended at the same parameters."""
    cores = cores or os.cpu_count() or 1
    for name in algorithms:
        registry.get(name)
        if name not in TRAINERS:
            raise ConfigError(f"perf layout: no stage to time for {name!r}; choose from {', '.join(TRAINERS)}")
    rows = []
    for name in algorithms:
        side = _run(name, preset, steps, cores, 1)
        one = _run(name, preset, steps, 1, cores)[0]
        many_rate = cores * steps / max(s for s, *_ in side)
        one_rate = steps / one[0]
        rows.append({"algorithm": name, "preset": preset, "steps": steps, "cores": cores,
                     "workers_steps_per_s": many_rate, "threads_steps_per_s": one_rate,
                     "gain": many_rate / one_rate, "same_numbers": side[0][1:] == one[1:],
                     "repeatable": all(s[1:] == side[0][1:] for s in side)})
    return rows


def write_report(rows: list[dict], out: Path, command: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    n = rows[0]["cores"]
    lines = [f"# Worker layout: {n} single-threaded workers against one worker on {n} threads", "",
             made_by(command, None, code_version(), ("torch",)), "",
             f"Each algorithm's costliest stage at its `{rows[0]['preset']}` preset, {rows[0]['steps']} steps from a "
             f"fresh build (seed 0) after a warm-up call, random Walker2d-shaped transitions, float32. `{n} workers`: "
             f"{n} processes of one torch thread started together, the machine's steps per second = {n} x steps over "
             f"the slowest worker's time. `1 worker`: one process on {n} threads. `gain`: the first over the second, "
             "runs per hour on the same cores. `same numbers`: whether one thread and "
             f"{n} threads ended at the same parameters (sums of values and of magnitudes, float64); `workers agree`: "
             f"whether the {n} one-thread workers, each from the same seed, did.", "",
             f"| algorithm | {n} workers x 1 thread, steps/s | 1 worker x {n} threads, steps/s | gain | same numbers | "
             "workers agree |",
             "|---|---:|---:|---:|---|---|"]
    lines += [f"| {r['algorithm']} | {r['workers_steps_per_s']:.1f} | {r['threads_steps_per_s']:.1f} | "
              f"{r['gain']:.2f}x | {'yes' if r['same_numbers'] else 'no'} | {'yes' if r['repeatable'] else 'no'} |"
              for r in rows]
    out.write_text("\n".join(lines) + "\n")
