"""Whether the critics behind a report's numbers can be trusted: each run's `critic_check`.

A diffusion policy guided or fine-tuned by Q_0 is only as good as Q_0. The check every critic stage
makes (policies.algorithms.pretrain.critic_check) is gathered here per dataset and report entry:
Q_0 on dataset actions beside the discounted returns the rewards allow (outside them the critic has
diverged) and beside the returns the data earned (how well it ranks states).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

COLUMNS = ["dataset", "entry", "runs", "q_data_mean", "low", "high", "mc_return_mean", "mc_correlation", "outside"]


def critic_checks(runs: pd.DataFrame, entry_of: pd.Series) -> pd.DataFrame:
    """Per (dataset, entry) over the runs `entry_of` names (run_id -> the report's run entry, so that two
    configs of one algorithm stay apart as in the score tables) recorded with a critic check (schema 4 on)."""
    if runs.empty or "diagnostics" not in runs:
        return pd.DataFrame(columns=COLUMNS)
    done = runs[runs["run_id"].isin(entry_of.index) & runs["diagnostics"].notna()]
    checks = [(r.dataset, entry_of[r.run_id], json.loads(r.diagnostics).get("critic")) for r in done.itertuples()]
    frame = pd.DataFrame([(d, e, c) for d, e, c in checks if c], columns=["dataset", "entry", "check"])
    rows = []
    for (dataset, entry), g in frame.groupby(["dataset", "entry"], sort=True):
        c = list(g["check"])
        corr = [x["mc_correlation"] for x in c if x["mc_correlation"] is not None]
        rows.append({"dataset": dataset, "entry": entry, "runs": len(c),
                     "q_data_mean": float(np.mean([x["q_data_mean"] for x in c])),
                     "low": min(x["value_bounds"][0] for x in c), "high": max(x["value_bounds"][1] for x in c),
                     "mc_return_mean": float(np.mean([x["mc_return_mean"] for x in c])),
                     "mc_correlation": float(np.mean(corr)) if corr else np.nan,
                     "outside": sum(bool(x["outside_bounds"]) for x in c)})
    return pd.DataFrame(rows, columns=COLUMNS)
