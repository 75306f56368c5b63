"""What a sweep's shared stages saved: each run's cost alone beside what the sweep spent.

A run that restored a stage from the sweep's shared store (trained by another algorithm's run on the same
dataset, reward transform and seed) records that stage's seconds as the run that trained it measured them, so
its `wall_seconds` is its cost alone; the sweep did not spend them again. Per dataset, preset and seed:
    alone = sum of the runs' wall_seconds,   sweep = alone - sum of the seconds of stages they restored.
"""

from __future__ import annotations

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
    the first training's; the line says so, or names the runs that differ."""
    if runs.empty or "diagnostics" not in runs:
        return []
    uses: dict[tuple[str, str, str], list[tuple[str, str, bool]]] = {}
    done = runs[(runs["status"] == "finished") & runs["diagnostics"].notna()]
    for r in done.itertuples():
        restored = set(json.loads(r.shared_stages)) if isinstance(getattr(r, "shared_stages", None), str) else set()
        for stage, w in (json.loads(r.diagnostics).get("weights") or {}).items():
            if w.get("shared_as"):
                key = (r.dataset, str(getattr(r, "dataset_content", "") or ""), w["shared_as"])
                uses.setdefault(key, []).append((r.run_id, w["digest"], stage not in restored))
    if not uses:
        return []
    differ = {k: v for k, v in uses.items() if len({d for _, d, _ in v}) > 1}
    retrained = sum(1 for v in uses.values() if sum(t for _, _, t in v) > 1)
    runs_n = len({run for v in uses.values() for run, _, _ in v})
    shared = sum(1 for v in uses.values() if len(v) > 1)
    head = (f"shared stages: {len(uses)} used by {runs_n} runs, {shared} of them by more than one; {retrained} trained "
            "more than once (their checkpoint gone, or two runs at once)")
    if not shared:
        return [head + ": no stage has two runs to compare yet"]
    if not differ:
        return [head + ": every run of each stage saw the same numbers (the same digest of its weights), so "
                "training a stage again changed nothing"]
    return [head + f"; {len(differ)} differ: " + "; ".join(
        f"{stage} on {dataset}: " + ", ".join(f"{run} {digest}" for run, digest, _ in v)
        for (dataset, _, stage), v in sorted(differ.items()))]
