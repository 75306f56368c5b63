"""The quick benchmark: QGPO against its s = 0 ablation (diffusion BC) on the embedded dataset.

Guidance scale 0 samples the behaviour model alone, so the ablation reuses the trained run and costs
only its evaluation. The comparison is per seed first (each seed's mean over episodes), then across
seeds, as the field reports: a seed is the unit of replication, episodes are not.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from bench.reports.render import fmt, markdown_table
from bench.reports.report import run_scores
from bench.harness.runner import RunSpec
from bench.harness.store import ResultsStore

DATASET = "diffbench/pointmaze/umaze-dense-small-v0"
SEEDS = (0, 1)
GUIDANCE_SCALES = (0.0, 1.0, 3.0)
SELECTION_EPISODES = 25  # held-out episodes per scale that choose each seed's scale (a quarter of the reported 100)


def specs(dataset: str = DATASET, seeds: Sequence[int] = SEEDS, preset: str = "quick",
          guidance_scales: Sequence[float] = GUIDANCE_SCALES, episodes: int | None = None) -> list[RunSpec]:
    return [RunSpec(algorithm="qgpo", dataset=dataset, seed=seed, preset=preset, episodes=episodes,
                    guidance_scales=tuple(float(s) for s in guidance_scales), selection_episodes=SELECTION_EPISODES)
            for seed in seeds]


def comparison(store: ResultsStore, run_ids: Sequence[str]) -> pd.DataFrame:
    """One row per guidance scale: per-seed scores, their mean and std, and the gain over s = 0."""
    scores = run_scores(store)
    if scores.empty or not scores["run_id"].isin(run_ids).any():
        return pd.DataFrame()
    scores = scores[scores["run_id"].isin(run_ids) & (scores["selection"] == "none")]  # the per-scale rows
    per_seed = scores.groupby(["guidance_scale", "seed"])["score"].mean().unstack("seed")
    per_seed.columns = [f"seed {s}" for s in per_seed.columns]
    table = per_seed.assign(mean=per_seed.mean(axis=1), std_over_seeds=per_seed.std(axis=1, ddof=1))
    if 0.0 in table.index:
        table["gain_vs_s0"] = table["mean"] - table.loc[0.0, "mean"]
        table["every_seed_above_s0"] = per_seed.min(axis=1) > per_seed.loc[0.0].max()
    table["episodes_per_seed"] = scores.groupby("guidance_scale")["episodes"].min()
    return table.rename_axis("guidance_scale").reset_index()


def format_table(table: pd.DataFrame) -> str:
    """Markdown, one row per guidance scale; s = 0 is labelled as the diffusion-BC ablation."""
    seeds = [c for c in table.columns if c.startswith("seed ")]
    rows = pd.DataFrame({"guidance scale": ["0 (diffusion BC)" if s == 0 else f"{s:g}" for s in table["guidance_scale"]]})
    for c in seeds:
        rows[c] = table[c].map(fmt)
    rows["mean ± std over seeds"] = [fmt(m) + (f" ± {fmt(sd)}" if np.isfinite(sd) else "")
                                     for m, sd in zip(table["mean"], table["std_over_seeds"])]
    gains = table["gain_vs_s0"] if "gain_vs_s0" in table else pd.Series(np.nan, index=table.index)
    rows["vs s = 0"] = ["" if s == 0 or not np.isfinite(g) else f"{g:+.1f}" for s, g in zip(table["guidance_scale"], gains)]
    return markdown_table(rows)


def summary_lines(store: ResultsStore, run_ids: Sequence[str]) -> list[str]:
    """Wall time and cost of each run, from the store."""
    runs = store.table("runs").set_index("run_id")
    out = []
    for run_id in run_ids:
        if run_id not in runs.index:
            continue
        r = runs.loc[run_id]
        wall = f"{r['wall_seconds'] / 60:.1f} min" if pd.notna(r["wall_seconds"]) else "?"
        aps = f", {r['actions_per_second']:.0f} actions/s at evaluation" if pd.notna(r["actions_per_second"]) else ""
        chosen = (f"; guidance scale {r['selected_guidance_scale']:g} chosen on {SELECTION_EPISODES} held-out episodes "
                  "per scale" if pd.notna(r.get("selected_guidance_scale")) else "")
        out.append(f"seed {r['seed']} [{run_id}]: {r['status']}, {wall}, {int(r['gradient_steps'] or 0)} gradient steps, "
                   f"{r['nfe_per_action']:g} NFE per action{aps}{chosen}")
    return out
