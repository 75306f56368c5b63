"""A time limit for a sweep: start only the runs the store's history says will end before it.

A job on a machine held for a fixed time (a SLURM allocation, a preemptible VM, a working session) loses every run
still going when the time is up, back to its last checkpoint, or all of it where the disk does not outlive the job.
With a limit, a run is started only when its projected wall time fits in what is left; the rest are deferred, said
so, and made by the same command later. A run that does not fit does not block the ones after it that do.

Projection: the mean cost alone (`wall_seconds`: restored shared stages counted, as if it trained them) of the
store's finished runs of the same algorithm on the same dataset family, else on the families it has, scaled by the
families' cost ratio for other algorithms (`cost_model`), in core-seconds, divided by the threads this run gets. A
run resuming from checkpoints is projected as a fresh one. An algorithm with no finished run in the store has no
projection and is started while any time is left. A started run is never stopped by the limit: leave a margin for
the projection's error.
"""

from __future__ import annotations

import re
import time

import pandas as pd

from bench.harness.cost_model import estimate
from bench.harness.provenance import run_threads
from bench.harness.runner import RunSpec
from envs.families import family
from policies import registry
from policies.errors import ConfigError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration(text: str) -> float:
    """Seconds in "5400", "90m", "2h", "1h30m" or "1.5h"; one error naming the accepted forms otherwise."""
    value = str(text).strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        parts = _PART.findall(value)
        seconds = sum(float(n) * _UNITS[u] for n, u in parts) if "".join(n + u for n, u in parts) == value else -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigError(f"--time-limit: cannot read {text!r} as a positive duration; write seconds (5400) or "
                          "hours, minutes and seconds (2h, 90m, 1h30m)")
    return seconds


class Projection:
    """Each run's projected wall seconds on `threads` torch threads, from the finished runs in `runs` (a store's runs
    table): None where the store has no finished run of its algorithm."""

    def __init__(self, runs: pd.DataFrame, threads: int):
        self.threads = max(1, threads)
        done = runs[runs["status"] == "finished"] if len(runs) else runs
        core_seconds: dict[tuple[str, str], list[float]] = {}
        for r in done.itertuples():
            if pd.notna(r.wall_seconds):
                key = (r.algorithm, family(r.dataset))
                core_seconds.setdefault(key, []).append(float(r.wall_seconds) * run_threads(r.hardware))
        self._means = {key: sum(v) / len(v) for key, v in core_seconds.items()}

    def __call__(self, spec: RunSpec) -> float | None:
        found = estimate(self._means, spec.algorithm, family(spec.dataset))
        return found.seconds / self.threads if found else None


def projected_line(specs: list[RunSpec], runs: pd.DataFrame, workers: int, threads: int) -> str:
    """What `specs` (the runs left) would take here, for `sweep --plan`."""
    project = Projection(runs, threads)
    seconds = [project(spec) for spec in specs]
    known = [s for s in seconds if s is not None]
    unknown = len(seconds) - len(known)
    core_hours = sum(known) * project.threads / 3600
    short = sum(s for spec, s in zip(specs, seconds)
                if s is not None and registry.get(spec.algorithm).shortfall(spec.preset, spec.dataset))
    return (f"left to run: {len(specs)} run{'s' * (len(specs) != 1)}, projected {core_hours:.1f} core-hours, about "
            f"{sum(known) / max(1, workers) / 3600:.1f} hours on {workers} worker(s) here (each at the mean cost alone "
            "of its algorithm's finished runs in the store, on the same dataset family where there are some, else "
            "scaled from the families it has)"
            + (f"; {short * project.threads / 3600:.1f} of those core-hours are runs declared short of competence "
               "(ranked nowhere, made last)" if short else "")
            + (f"; {unknown} runs of algorithms with no finished run in the store are not counted" if unknown else ""))


class TimeLimit:
    """Which runs fit before `seconds` from now, each projected from the finished runs in `runs` (a store's runs
    table), on `threads` torch threads per run."""

    def __init__(self, seconds: float, runs: pd.DataFrame, threads: int, clock=time.time):
        self.clock, self.until = clock, clock() + seconds
        self.projection = Projection(runs, threads)
        self.deferred: list[tuple[RunSpec, float]] = []

    def left(self) -> float:
        return self.until - self.clock()

    def admit(self, spec: RunSpec) -> bool:
        """Whether to start `spec` now; a run that does not fit is remembered in `deferred`."""
        left, projected = self.left(), self.projection(spec)
        if left > 0 and (projected is None or projected <= left):
            return True
        self.deferred.append((spec, projected if projected is not None else float("nan")))
        return False
