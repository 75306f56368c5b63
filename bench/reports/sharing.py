"""What a sweep's shared stages saved: each run's cost alone beside what the sweep spent.

A run that restored a stage from the sweep's shared store (trained by another algorithm's run on the same
dataset, reward transform and seed) records that stage's seconds as the run that trained it measured them, so
its `wall_seconds` is its cost alone; the sweep did not spend them again. Per dataset, preset and seed:
    alone = sum of the runs' wall_seconds,   sweep = alone - sum of the seconds of stages they restored.
"""

from __future__ import annotations

import dataclasses
import json

import pandas as pd

COLUMNS = ["dataset", "preset", "seed", "runs", "algorithms", "shared", "alone_hours", "sweep_hours", "saving"]


def shared_stage_savings(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, preset, seed) with a run that restored a shared stage; finished runs recorded with
    shared_stages (schema 3 on) only."""
    if runs.empty or "shared_stages" not in runs:
        return pd.DataFrame(columns=COLUMNS)
    done = runs[(runs["status"] == "finished") & runs["shared_stages"].notna()].copy()
    done["restored"] = done["shared_stages"].map(json.loads)
    done["seconds"] = done["stage_seconds"].map(lambda s: json.loads(s) if s else {})
    done["reused"] = [sum(sec.get(stage, 0.0) for stage in restored)
                      for restored, sec in zip(done["restored"], done["seconds"])]
    rows = []
    for (dataset, preset, seed), g in done.groupby(["dataset", "preset", "seed"], sort=True):
        if not g["restored"].map(bool).any():
            continue
        alone = g["wall_seconds"].sum()
        shared = sorted({stage for restored in g["restored"] for stage in restored})
        rows.append({"dataset": dataset, "preset": preset, "seed": int(seed), "runs": len(g),
                     "algorithms": ", ".join(sorted(g["algorithm"])), "shared": ", ".join(shared),
                     "alone_hours": alone / 3600, "sweep_hours": (alone - g["reused"].sum()) / 3600,
                     "saving": alone / (alone - g["reused"].sum())})
    return pd.DataFrame(rows, columns=COLUMNS)


def stage_agreement(runs: pd.DataFrame) -> list[str]:
    """Whether every run that used a shared stage saw the same numbers: per stage (dataset, its content, the stage's
    name in the shared store), the digests the runs recorded (`diagnostics.weights`). A stage trained again after its
    checkpoint was gone (a store restored from a snapshot keeps no checkpoints) changed nothing when its digest is
    the first training's; the line says so, or names the runs that differ. A training by a run from before digests
    were recorded (found by the stage's name, made from that run's config) is counted, and said to have nothing to
    compare with."""
    if runs.empty or "diagnostics" not in runs:
        return []
    uses: dict[tuple[str, str, str], list[tuple[str, str, bool]]] = {}
    done = runs[runs["status"] == "finished"]
    for r in done[done["diagnostics"].notna()].itertuples():
        restored = _restored(r)
        for stage, w in (json.loads(r.diagnostics).get("weights") or {}).items():
            if w.get("shared_as"):
                key = (r.dataset, str(getattr(r, "dataset_content", "") or ""), w["shared_as"])
                uses.setdefault(key, []).append((r.run_id, w["digest"], stage not in restored))
    if not uses:
        return []
    undigested = _undigested_trainings(done, {(dataset, name) for dataset, _, name in uses})
    differ = {k: v for k, v in uses.items() if len({d for _, d, _ in v}) > 1}
    trainings = {k: sum(t for _, _, t in v) + len(undigested.get((k[0], k[2]), ())) for k, v in uses.items()}
    retrained = sum(1 for n in trainings.values() if n > 1)
    runs_n = len({run for v in uses.values() for run, _, _ in v})
    shared = sum(1 for v in uses.values() if len(v) > 1)
    head = (f"shared stages: {len(uses)} used by {runs_n} run{'' if runs_n == 1 else 's'}, {shared} of them by more "
            f"than one; {retrained} trained more than once (their checkpoint gone, or two runs at once)")
    if undigested:
        first = sorted({run for v in undigested.values() for run in v})
        head += (f"; {len(undigested)} of them first trained by a run from before the weights' digests were recorded "
                 f"({', '.join(first)}), so a later training of those has nothing to be compared with")
    if not shared:
        return [head + ": no stage has two runs to compare yet"]
    if not differ:
        return [head + ": every run of each stage that recorded a digest saw the same numbers (the same digest of "
                "its weights), so training a stage again changed nothing there"]
    return [head + f"; {len(differ)} differ: " + "; ".join(
        f"{stage} on {dataset}: " + ", ".join(f"{run} {digest}" for run, digest, _ in v)
        for (dataset, _, stage), v in sorted(differ.items()))]


def _restored(run) -> set[str]:
    return set(json.loads(run.shared_stages)) if isinstance(getattr(run, "shared_stages", None), str) else set()


def _undigested_trainings(done: pd.DataFrame, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], list[str]]:
    """(dataset, shared name) -> the runs that trained that stage without recording its digest."""
    from policies import registry
    from policies.algorithms.staged import StagedAlgorithm
    from policies.errors import ConfigError

    out: dict[tuple[str, str], list[str]] = {}
    for r in done.itertuples():
        weights = json.loads(r.diagnostics).get("weights") if isinstance(r.diagnostics, str) else None
        if weights:
            continue
        try:
            cls = registry.get(r.algorithm)
        except ConfigError:  # an algorithm this install does not have: nothing to name its stages by
            continue
        if not (isinstance(cls, type) and issubclass(cls, StagedAlgorithm) and cls.shared_stages):
            continue
        trained = set(json.loads(r.stage_seconds) if isinstance(r.stage_seconds, str) else {}) - _restored(r)
        known = {f.name for f in dataclasses.fields(cls.config_cls)}
        stored = json.loads(r.config)  # the algorithm's settings beside the run's (preset, protocol)
        try:
            config = cls.config_cls.from_dict({k: v for k, v in stored.items() if k in known})
        except ConfigError:  # a value an older diffbench wrote that this one no longer takes
            continue
        for stage in sorted(trained & set(cls.shared_stages)):
            key = (r.dataset, cls.shared_name(config, stage))
            if key in wanted:
                out.setdefault(key, []).append(r.run_id)
    return out
