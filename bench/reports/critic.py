"""Whether the critics behind a report's numbers can be trusted: each run's `critic_check` (every algorithm with a
critic, `bench.harness.diagnostics`).

A diffusion policy guided or fine-tuned by Q_0 is only as good as Q_0. The check every critic stage
makes (policies.algorithms.pretrain.critic_check) is gathered here per dataset and report entry:
Q_0 on dataset actions beside the discounted returns the rewards allow (outside them the critic has
diverged) and beside the returns the data earned (how well it ranks states).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

COLUMNS = ["dataset", "entry", "runs", "q_data_mean", "low", "high", "mc_return_mean", "mc_correlation", "outside",
           "returns", "policy_gap"]
GUIDANCE_COLUMNS = ["dataset", "entry", "runs", "support_m", "beta", "beta_q_spread_median", "target_entropy", "log_m",
                    "energy_loss", "learned", "near_uniform"]


def _checks(runs: pd.DataFrame, entry_of: pd.Series, stage: str) -> pd.DataFrame:
    """(dataset, entry, check) of every run `entry_of` names that recorded a check of `stage`."""
    if runs.empty or "diagnostics" not in runs:
        return pd.DataFrame(columns=["dataset", "entry", "check"])
    done = runs[runs["run_id"].isin(entry_of.index) & runs["diagnostics"].notna()]
    checks = [(r.dataset, entry_of[r.run_id], json.loads(r.diagnostics).get(stage)) for r in done.itertuples()]
    return pd.DataFrame([(d, e, c) for d, e, c in checks if c], columns=["dataset", "entry", "check"])


def critic_checks(runs: pd.DataFrame, entry_of: pd.Series) -> pd.DataFrame:
    """Per (dataset, entry) over the runs `entry_of` names (run_id -> the report's run entry, so that two
    configs of one algorithm stay apart as in the score tables) recorded with a critic check (schema 4 on)."""
    rows = []
    for (dataset, entry), g in _checks(runs, entry_of, "critic").groupby(["dataset", "entry"], sort=True):
        c = list(g["check"])
        corr = [x["mc_correlation"] for x in c if x["mc_correlation"] is not None]
        rows.append({"dataset": dataset, "entry": entry, "runs": len(c),
                     "q_data_mean": float(np.mean([x["q_data_mean"] for x in c])),
                     "low": min(x["value_bounds"][0] for x in c), "high": max(x["value_bounds"][1] for x in c),
                     "mc_return_mean": float(np.mean([x["mc_return_mean"] for x in c])),
                     "mc_correlation": float(np.mean(corr)) if corr else np.nan,
                     "outside": sum(bool(x["outside_bounds"]) for x in c),
                     "returns": "; ".join(sorted({x.get("returns", "episodes; every row") for x in c})),
                     "policy_gap": float(np.mean([x["policy_gap_mean"] for x in c if "policy_gap_mean" in x] or [np.nan]))})
    return pd.DataFrame(rows, columns=COLUMNS)


def guidance_checks(runs: pd.DataFrame, entry_of: pd.Series) -> pd.DataFrame:
    """Per (dataset, entry): what QGPO's CEP target left its energy to learn and how much it learned
    (`policies.algorithms.qgpo.guidance_check`), means over runs; `near_uniform` counts the runs flagged."""
    rows = []
    for (dataset, entry), g in _checks(runs, entry_of, "energy").groupby(["dataset", "entry"], sort=True):
        c = list(g["check"])
        mean = lambda key: float(np.mean([x[key] for x in c if x.get(key) is not None] or [np.nan]))  # noqa: E731
        rows.append({"dataset": dataset, "entry": entry, "runs": len(c), "support_m": c[0]["support_m"],
                     "beta": c[0]["beta"], **{k: mean(k) for k in ("beta_q_spread_median", "target_entropy", "log_m",
                                                                    "energy_loss", "learned")},
                     "near_uniform": sum(bool(x["near_uniform"]) for x in c)})
    return pd.DataFrame(rows, columns=GUIDANCE_COLUMNS)
