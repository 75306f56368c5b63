"""(task, seed) jobs of a toy study that survive an interruption: each finished job's rows are appended
to `<out>.partial.csv`, and an invocation started again redoes only the jobs not found there."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from bench.harness.provenance import code_version
from policies.errors import ConfigError
from bench.studies.exactness import run_jobs

Key = tuple[str, int]


def run_resumable(fn: Callable[..., list[dict]], jobs: list[tuple], key: Callable[[tuple], Key], out: Path,
                  budget_name: str, workers: int, reuse: Callable[[pd.DataFrame], pd.DataFrame | None],
                  remainder: Callable[[tuple, pd.DataFrame], tuple | None] | None = None,
                  from_rows: Sequence[Path] | None = None,
                  merge: Callable[[list[list[dict]]], list[dict]] | None = None) -> tuple[list[dict], int]:
    """`fn(*job)` for each job not already finished; returns (all rows, jobs taken from the partial file).
    `from_rows`: no job runs; the jobs' rows come from earlier runs' CSVs (`read_rows`), several combined by
    `merge` (default `first_run_per_job`: a job's rows come from one run, the first file that has it).

    `budget_name`: rows are reused only under the same one (`budget_label` names the values too).
    `reuse(rows of one earlier (task, seed))` gives the rows to keep, or None to run the job again (e.g.
    when it lacks a beta asked for now). Rows record the code version that made them; rows of an
    invocation that recorded none are redone. `remainder(job, kept rows)` may give a smaller job that
    makes only the rows the kept ones lack (e.g. one method's rows, dropped by `reuse` after a fix to it);
    its rows join the kept ones. The caller deletes the partial file once its report is written."""
    version, start = code_version(), time.perf_counter()
    partial = out.with_suffix(".partial.csv")
    wanted = {key(job): job for job in jobs}
    if from_rows is not None:
        return (merge or first_run_per_job)([read_rows(path, set(wanted)) for path in from_rows]), len(wanted)
    rows: list[dict] = []
    done: set[Key] = set()
    rest: list[tuple] = []
    if partial.exists():
        previous = pd.read_csv(partial)
        if "code" in previous and "budget" in previous:
            previous = previous[previous.budget == budget_name]
            for (task, seed), grp in previous.groupby(["task", "seed"]):
                kept = reuse(grp) if (task, int(seed)) in wanted else None
                if kept is not None:
                    done.add((task, int(seed)))
                    rows += kept.drop(columns="budget").to_dict("records")
                    smaller = remainder(wanted[(task, int(seed))], kept) if remainder else None
                    if smaller is not None:
                        rest.append(smaller)

    def finished(job: tuple, result: list[dict]) -> None:
        rows.extend(r | {"code": version} for r in result)
        # rewritten whole, not appended: jobs may add columns the first one lacked
        pd.DataFrame([r | {"budget": budget_name} for r in rows]).to_csv(partial, index=False)
        task, seed = key(job)
        print(f"{task} seed {seed}: done ({time.perf_counter() - start:.0f} s)", flush=True)

    run_jobs(fn, [job for job in jobs if key(job) not in done] + rest, workers, finished)
    if done:
        print(f"{len(done)} (task, seed) jobs came from an earlier invocation ({partial.name})", flush=True)
    return rows, len(done)


def read_rows(path: Path, keys: set[Key]) -> list[dict]:
    """The rows of an earlier study (its committed CSV) for these (task, seed) jobs, to write its report again
    without running anything (e.g. after a change to the report alone); each row keeps the code version
    that made it, which the report lists."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"--from-rows {path}: no such file; give the CSV a study wrote beside its report "
                          "(e.g. results/finetune.csv)")
    rows = pd.read_csv(path)
    missing = {"task", "seed", "code"} - set(rows.columns)
    if missing:
        raise ConfigError(f"--from-rows {path}: not a study's rows (no {', '.join(sorted(missing))} column)")
    rows = rows[[(task, int(seed)) in keys for task, seed in zip(rows.task, rows.seed)]]
    if rows.empty:
        asked = ", ".join(f"{task} seed {seed}" for task, seed in sorted(keys))
        raise ConfigError(f"--from-rows {path}: no rows for the jobs asked for ({asked})")
    return rows.to_dict("records")


def first_run_per_job(parts: list[list[dict]]) -> list[dict]:
    """Several runs' rows as one, each (task, seed) job's rows from the first run that made it: a job's rows
    are made together (paired by its seed), so they are never mixed across runs."""
    rows: list[dict] = []
    seen: set[Key] = set()
    for part in parts:
        jobs = {(row["task"], int(row["seed"])) for row in part}
        rows += [row for row in part if (row["task"], int(row["seed"])) not in seen]
        seen |= jobs
    return rows
