"""A time limit for a sweep: start only the runs the store's history says will end before it.

A job on a machine held for a fixed time (a SLURM allocation, a preemptible VM, a working session) loses every run
still going when the time is up, back to its last checkpoint, or all of it where the disk does not outlive the job.
With a limit, a run is started only when its projected wall time fits in what is left; the rest are deferred, said
so, and made by the same command later. A run that does not fit does not block the ones after it that do.

Projection: the mean cost of the store's finished runs of the same algorithm at the same config but the seed (a
preset's steps change over time, and a run of an older preset says little of this one's cost), else on the same
dataset family, else on the families it has, scaled by the families' cost ratio for other algorithms (`cost_model`),
in core-seconds, divided by
the threads this run gets. A stage several algorithms share (QGPO's behaviour model and critic, which DDPO, CTRL,
DxMI and SfBC restore) is costed apart: counted where the run will train it, not where the shared store already holds
it (nor, in a plan, where an earlier run of the plan trains it). A run's `wall_seconds` counts its restored stages as
if it trained them (its cost alone), so charging that to every run sharing a stage would project a sweep at several
times what it spends. A run resuming from checkpoints is projected as a fresh one. An algorithm with no finished run
in the store has no projection and is started while any time is left. A started run is never stopped by the limit:
leave a margin for the projection's error.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pandas as pd

from bench.harness.cost_model import estimate
from bench.harness.plan import identity_key, wanted_config
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


def _shared_stages(algorithm: str) -> tuple[str, ...]:
    try:
        cls = registry.get(algorithm)
    except ConfigError:  # a run of an algorithm no longer registered: nothing of it is shared
        return ()
    return tuple(s for s in getattr(cls, "shared_stages", ()) or () if s in getattr(cls, "stages", ()))


class Projection:
    """Each run's projected wall seconds on `threads` torch threads, from the finished runs in `runs` (a store's runs
    table): None where the store has no finished run of its algorithm. With `results` (the sweep's directory), a
    shared stage its shared store holds costs nothing."""

    def __init__(self, runs: pd.DataFrame, threads: int, results: Path | None = None):
        self.threads, self.results = max(1, threads), results
        done = runs[runs["status"] == "finished"] if len(runs) else runs
        own: dict[tuple[str, str], list[float]] = {}
        stages: dict[tuple[str, str], list[float]] = {}
        # each run: (algorithm, dataset family, `identity_key` of its config, own core-seconds, {shared stage: ...})
        self._runs: list[tuple[str, str, str, float, dict[str, float]]] = []
        for r in done.itertuples():
            if pd.isna(r.wall_seconds):
                continue
            threads_then, group = run_threads(r.hardware), family(r.dataset)
            recorded = getattr(r, "stage_seconds", None)
            seconds = json.loads(recorded) if isinstance(recorded, str) and recorded else {}
            shared = {stage: float(seconds[stage]) * threads_then
                      for stage in _shared_stages(r.algorithm) if stage in seconds}
            mine = max(0.0, float(r.wall_seconds) * threads_then - sum(shared.values()))
            own.setdefault((r.algorithm, group), []).append(mine)
            for stage, value in shared.items():
                stages.setdefault((f"{r.algorithm}/{stage}", group), []).append(value)
            config = json.loads(r.config) if isinstance(getattr(r, "config", None), str) and r.config else {}
            self._runs.append((r.algorithm, group, identity_key(config), mine, shared))
        self._own = {key: sum(v) / len(v) for key, v in own.items()}
        self._stages = {key: sum(v) / len(v) for key, v in stages.items()}

    def _same_config(self, spec: RunSpec, config: Any) -> list[tuple[str, str, str, float, dict[str, float]]]:
        """The stored runs of `spec` (`config`: its config) but the seed, on its dataset family (a preset's steps
        change over time: a run of an older preset says little of the cost of this one)."""
        key = identity_key(wanted_config(spec, config))
        group = family(spec.dataset)
        return [r for r in self._runs if r[:3] == (spec.algorithm, group, key)]

    def shared_files(self, spec: RunSpec, config: Any = None) -> list[tuple[str, Path | None]]:
        """(stage, its file in the shared store) for each stage `spec` (`config`: its config, made when None) shares;
        None where that cannot be known here (no results directory, or a dataset not on this machine)."""
        names = _shared_stages(spec.algorithm)
        if not names or self.results is None:
            return [(stage, None) for stage in names]
        try:
            config = spec.config() if config is None else config
            cls, where = registry.get(spec.algorithm), spec.shared_directory(self.results)
        except (ConfigError, OSError):
            return [(stage, None) for stage in names]
        return [(stage, where / f"{cls.shared_name(config, stage)}.pt") for stage in names]

    def __call__(self, spec: RunSpec, planned: set[Path] | None = None) -> float | None:
        """`planned`: the shared stages earlier runs of a plan train (this run's are added). From the runs at the
        same config where there are some, else the family's (`cost_model.estimate`)."""
        group = family(spec.dataset)
        found = estimate(self._own, spec.algorithm, group)
        if found is None:
            return None
        try:
            config = spec.config()
        except ConfigError:
            config, same = None, []
        else:
            same = self._same_config(spec, config)
        seconds = sum(r[3] for r in same) / len(same) if same else found.seconds
        for stage, path in self.shared_files(spec, config):
            if path is not None and (path.exists() or (planned is not None and path in planned)):
                continue
            if path is not None and planned is not None:
                planned.add(path)
            alike = [r[4][stage] for r in same if stage in r[4]]
            cost = estimate(self._stages, f"{spec.algorithm}/{stage}", group)
            seconds += sum(alike) / len(alike) if alike else cost.seconds if cost else 0.0
        return seconds / self.threads


def projected_runs(specs: list[RunSpec], runs: pd.DataFrame, threads: int,
                   results: Path | None = None) -> pd.DataFrame:
    """One row per run of `specs` (the runs left, in the order a sweep makes them): its algorithm, dataset,
    projected `seconds` on one worker of `threads` threads (NaN: no projection) and `short` (declared short of
    competence at its preset there: ranked nowhere, made last)."""
    project, planned = Projection(runs, threads, results), set()
    rows = []
    for spec in specs:
        seconds = project(spec, planned)
        rows.append({"algorithm": spec.algorithm, "dataset": spec.dataset,
                     "seconds": float("nan") if seconds is None else seconds,
                     "core_hours": float("nan") if seconds is None else seconds * project.threads / 3600,
                     "short": bool(registry.get(spec.algorithm).shortfall(spec.preset, spec.dataset))})
    return pd.DataFrame(rows, columns=["algorithm", "dataset", "seconds", "core_hours", "short"])


def _totals(rows: pd.DataFrame) -> tuple[float, float, float, int]:
    return (float(rows["core_hours"].sum()), float(rows["seconds"].sum()) / 3600,
            float(rows.loc[rows["short"], "core_hours"].sum()), int(rows["seconds"].isna().sum()))


def projected_cost(specs: list[RunSpec], runs: pd.DataFrame, threads: int,
                   results: Path | None = None) -> tuple[float, float, float, int]:
    """What `specs` (the runs left, in the order a sweep makes them) would take: (core-hours, wall hours on one
    worker of `threads` threads, core-hours of runs declared short of competence, runs with no projection)."""
    return _totals(projected_runs(specs, runs, threads, results))


def where_the_hours_go(rows: pd.DataFrame, top: int = 15) -> list[str]:
    """`sweep --plan`'s breakdown of the projected core-hours (`projected_runs`' rows), by dataset and by algorithm,
    largest first, the part declared short of competence apart: what to cut or move to a bigger machine."""
    if rows.empty:
        return []
    parts = rows.assign(unranked=rows["core_hours"].where(rows["short"], 0.0))
    lines = []
    for key in ("dataset", "algorithm"):
        table = parts.groupby(key).agg(runs=("algorithm", "size"), hours=("core_hours", "sum"),
                                       unranked=("unranked", "sum")).sort_values("hours", ascending=False)
        lines.append(f"by {key}: core-hours (runs) [of which short of competence]")
        width = max(len(str(k)) for k in table.index)
        for name, r in table.head(top).iterrows():
            lines.append(f"  {name:<{width}}  {r['hours']:6.1f} ({int(r['runs'])})"
                         + (f"  [{r['unranked']:.1f}]" if r["unranked"] > 0 else ""))
        if len(table) > top:
            rest = table.iloc[top:]
            lines.append(f"  {len(rest)} more  {rest['hours'].sum():6.1f} ({int(rest['runs'].sum())})")
    return lines


def cost_line(rows: pd.DataFrame, workers: int) -> str:
    """What the runs left (`projected_runs`' rows) would take here, for `sweep --plan`."""
    core_hours, hours, short, unknown = _totals(rows)
    return (f"left to run: {len(rows)} run{'s' * (len(rows) != 1)}, projected {core_hours:.1f} core-hours, about "
            f"{hours / max(1, workers):.1f} hours on {workers} worker(s) here (each at the mean cost of "
            "its algorithm's finished runs in the store at the same config, else on the same dataset family, else "
            "scaled from the families it has; a shared stage counted once, and not at all where the shared store "
            "holds it)"
            + (f"; {short:.1f} of those core-hours are runs declared short of competence "
               "(ranked nowhere, made last)" if short else "")
            + (f"; {unknown} runs of algorithms with no finished run in the store are not counted" if unknown else ""))


class TimeLimit:
    """Which runs fit before `seconds` from now, each projected from the finished runs in `runs` (a store's runs
    table), on `threads` torch threads per run; `results`: the sweep's directory, whose shared stages a run restores
    instead of training."""

    def __init__(self, seconds: float, runs: pd.DataFrame, threads: int, clock=time.time,
                 results: Path | None = None):
        self.clock, self.until = clock, clock() + seconds
        self.projection = Projection(runs, threads, results)
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
