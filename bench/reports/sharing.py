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
