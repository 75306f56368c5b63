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
           "returns", "policy_gap", "course", "left_range"]
GUIDANCE_COLUMNS = ["dataset", "entry", "runs", "support_m", "beta", "beta_q_spread_median", "target_entropy", "log_m",
                    "energy_loss", "learned", "near_uniform", "fit_t", "rank_correlation", "f_spread", "beta_q_spread"]


def _checks(runs: pd.DataFrame, entry_of: pd.Series, stage: str) -> pd.DataFrame:
    """(dataset, entry, check) of every run `entry_of` names that recorded a check of `stage`."""
    if runs.empty or "diagnostics" not in runs:
        return pd.DataFrame(columns=["dataset", "entry", "check"])
    done = runs[runs["run_id"].isin(entry_of.index) & runs["diagnostics"].notna()]
    checks = [(r.dataset, entry_of[r.run_id], json.loads(r.diagnostics).get(stage)) for r in done.itertuples()]
    return pd.DataFrame([(d, e, c) for d, e, c in checks if c], columns=["dataset", "entry", "check"])


def course(checks: list[dict]) -> tuple[str, str]:
    """Q on dataset actions along training, from the runs' trends (the check at each curve point, then the final
    check: first, middle and last, means over the runs that have a trend), and where a run's Q first left the
    range the rewards allow ("never" if none did)."""
    with_trend = [c for c in checks if c.get("trend")]
    if not with_trend:
        return "", ""
    trends = [[*c["trend"], {"q_data_mean": c["q_data_mean"], "outside_bounds": c["outside_bounds"],
                             "stage": "final check", "step": None}] for c in with_trend]
    at = lambda i: float(np.mean([t[min(i, len(t) - 1)]["q_data_mean"] for t in trends]))  # noqa: E731
    longest = max(len(t) for t in trends)
    path = " → ".join(f"{at(i):.4g}" for i in dict.fromkeys((0, (longest - 1) // 2, longest - 1)))
    left = [next((p for p in t if p["outside_bounds"]), None) for t in trends]
    left = [p for p in left if p is not None]
    where = "never" if not left else "; ".join(
        p["stage"] if p["step"] is None else f"{p.get('stage', 'critic')} step {p['step']:,}"
        for p in sorted(left, key=lambda p: np.inf if p["step"] is None else p["step"])[:3])
    return path, where


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
                     "policy_gap": float(np.mean([x["policy_gap_mean"] for x in c if "policy_gap_mean" in x] or [np.nan])),
                     **dict(zip(("course", "left_range"), course(c)))})
    return pd.DataFrame(rows, columns=COLUMNS)


def guidance_checks(runs: pd.DataFrame, entry_of: pd.Series) -> pd.DataFrame:
    """Per (dataset, entry): what QGPO's CEP target left its energy to learn and how much it learned
    (`policies.algorithms.qgpo.guidance_check`), means over runs; `near_uniform` counts the runs flagged."""
    rows = []
    for (dataset, entry), g in _checks(runs, entry_of, "energy").groupby(["dataset", "entry"], sort=True):
        c = list(g["check"])
        mean = lambda key: float(np.mean([x[key] for x in c if x.get(key) is not None] or [np.nan]))  # noqa: E731
        near_zero = [x["fit_by_time"][0] for x in c if x.get("fit_by_time")]  # f_phi at the smallest time read
        at_zero = lambda key: float(np.mean([x[key] for x in near_zero])) if near_zero else np.nan  # noqa: E731
        rows.append({"dataset": dataset, "entry": entry, "runs": len(c), "support_m": c[0]["support_m"],
                     "beta": c[0]["beta"], **{k: mean(k) for k in ("beta_q_spread_median", "target_entropy", "log_m",
                                                                    "energy_loss", "learned")},
                     "near_uniform": sum(bool(x["near_uniform"]) for x in c),
                     "fit_t": near_zero[0]["t"] if near_zero else np.nan,
                     **{k: at_zero(k) for k in ("rank_correlation", "f_spread", "beta_q_spread")}})
    return pd.DataFrame(rows, columns=GUIDANCE_COLUMNS)
