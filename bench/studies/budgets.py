"""The budget study: each algorithm at several training budgets, seeds apart, with its learning curve, so that a
preset's budget is set where the curve has flattened and says what a run costs (`diffbench budgets`).

A budget is a factor on the step counts of the algorithm's preset (`Algorithm.budget_fields`: every stage's, so
a factor of 2 is twice the training of every stage). Every run records its learning curve (`RunSpec.curves`),
so the largest budget also shows where, inside it, the score stopped moving. Runs go through the harness: a
study resumes, skips what finished, and its store is a results store like any other.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from bench.harness.runner import RunSpec
from bench.harness.provenance import run_threads
from bench.harness.store import ResultsStore
from bench.reports import report as reports
from bench.reports.plots import score_label
from envs import catalog
from policies import registry
from policies.errors import ConfigError

DATASETS = ("diffbench/hopper/medium-small-v0", "diffbench/walker2d/medium-small-v0",
            "diffbench/pointmaze/umaze-dense-small-v0")
FACTORS = (0.5, 1.0, 2.0)


def budget_overrides(algorithm: str, preset: str, factor: float) -> dict[str, int]:
    """The algorithm's step counts at `preset`, times `factor` (rounded, at least 1 where the preset's is)."""
    cls = registry.get(algorithm)
    if not cls.budget_fields:
        raise ConfigError(f"{algorithm} names no budget fields (Algorithm.budget_fields); it cannot be scaled")
    if not (math.isfinite(factor) and factor > 0):
        raise ConfigError(f"budget factors must be finite numbers > 0, got {factor}")
    base = registry.make_config(algorithm, preset)
    out = {}
    for name in cls.budget_fields:
        steps = getattr(base, name)
        out[name] = max(int(round(steps * factor)), 1 if steps else 0)
    return out


def study_specs(algorithms: Sequence[str], datasets: Sequence[str], seeds: Sequence[int], factors: Sequence[float],
                preset: str = "cpu", overrides: dict[str, dict[str, Any]] | None = None,
                guidance_scales: tuple[float, ...] | None = (0.0, 1.0), **protocol: Any) -> list[RunSpec]:
    """One run per algorithm, dataset, budget and seed; guided algorithms at `guidance_scales` (default s = 0, the
    diffusion BC, and s = 1, the exact tilt), so both have a score at every budget; `protocol`: other `RunSpec`
    fields (episodes, curve_points, ...)."""
    specs = []
    for algorithm in algorithms:
        guided = registry.get(algorithm).guided
        for dataset in datasets:
            for factor in factors:
                own = {**(overrides or {}).get(algorithm, {}), **budget_overrides(algorithm, preset, factor)}
                specs += [RunSpec(algorithm=algorithm, dataset=dataset, seed=seed, preset=preset, overrides=own,
                                  guidance_scales=guidance_scales if guided else None, **protocol) for seed in seeds]
    for spec in specs:
        spec.config()
    return specs


def budget_table(store: ResultsStore, preset: str = "cpu") -> pd.DataFrame:
    """Per entry (an algorithm at one budget, a guided one per scale) and dataset: the budget factor, gradient
    steps, the seeds' scores (mean, std, 95% interval), the median run's core-minutes (wall time x the threads it
    held) and training CPU-minutes, and whether its curve had flattened by the end (its last two points within
    the seeds' spread, `report.plateaus`)."""
    report = reports.build(store)
    if report.empty:
        return pd.DataFrame()
    scores = report.scores[report.scores["selection"] == "none"]
    runs = store.table("runs").set_index("run_id")
    factors = {rid: _factor(runs.loc[rid], preset) for rid in scores["run_id"].unique()}
    scores = scores.assign(factor=scores["run_id"].map(factors)).dropna(subset=["factor"])
    evals = store.table("evaluations")
    final = evals[evals["stage"] == "final"]
    rows = []
    for (entry, dataset), g in scores.groupby(["entry", "dataset"]):
        held = runs.loc[g["run_id"].unique()]
        threads = held["hardware"].map(run_threads)
        mine = final[final["run_id"].isin(g["run_id"]) & (final["variant"] == g["variant"].iloc[0])]
        critic = [json.loads(d).get("critic") for d in held["diagnostics"].dropna()]
        critic = [c for c in critic if c]
        rows.append({"algorithm": g["algorithm"].iloc[0], "entry": entry, "dataset": dataset,
                     "scale": g["guidance_scale"].iloc[0], "factor": float(g["factor"].iloc[0]),
                     "q_data": float(np.mean([c["q_data_mean"] for c in critic])) if critic else np.nan,
                     "mc_return": float(np.mean([c["mc_return_mean"] for c in critic])) if critic else np.nan,
                     "q_correlation": float(np.mean([c["mc_correlation"] for c in critic
                                                     if c["mc_correlation"] is not None] or [np.nan])) if critic else np.nan,
                     "gradient_steps": int(held["gradient_steps"].median()),
                     "core_minutes": float((held["wall_seconds"] * threads).median() / 60),
                     "train_cpu_minutes": float(mine["cpu_seconds"].median() / 60) if mine["cpu_seconds"].notna().any()
                     else np.nan})
    table = pd.DataFrame(rows)
    per = report.per_dataset[["dataset", "entry", "mean", "std", "ci_low", "ci_high", "seeds"]]
    plateau = report.plateau[["dataset", "entry", "before_last", "last", "flat"]] if not report.plateau.empty else \
        pd.DataFrame(columns=["dataset", "entry", "before_last", "last", "flat"])
    table = table.merge(per, on=["dataset", "entry"]).merge(plateau, on=["dataset", "entry"], how="left")
    table = table.sort_values(["algorithm", "scale", "dataset", "factor"], na_position="first").reset_index(drop=True)
    table.attrs["curves"] = report.curves  # for the figure
    return table


def curves_figure(table: pd.DataFrame):
    """One panel per algorithm entry (a guided one per scale) and dataset: the learning curve at each budget
    (score against the steps of the stage that made the policy; the final evaluation ringed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = table.attrs["curves"]
    if "last_stage" in curves:  # the stage that made each policy (DxMI's imitation curve stands in the report)
        curves = curves[curves["last_stage"].astype(bool)]
    curves = curves.merge(table[["entry", "dataset", "algorithm", "scale", "factor"]],
                                         on=["entry", "dataset"])
    rows = table[["algorithm", "scale"]].drop_duplicates().itertuples(index=False)
    rows, datasets = list(rows), sorted(table["dataset"].unique())
    fig, axes = plt.subplots(len(rows), len(datasets), figsize=(4.2 * len(datasets), 2.8 * len(rows)), squeeze=False)
    colours = dict(zip(sorted(table["factor"].unique()), plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for (algorithm, scale), line in zip(rows, axes):
        for dataset, ax in zip(datasets, line):
            mine = curves[(curves["algorithm"] == algorithm) & (curves["dataset"] == dataset)
                          & ((curves["scale"] == scale) | (pd.isna(scale) & curves["scale"].isna()))]
            for factor, g in mine.groupby("factor"):
                g = g.sort_values("policy_step")
                own, last = g[~g["final"].astype(bool)], g[g["final"].astype(bool)]
                ax.plot(own["policy_step"], own["mean"], marker="o", markersize=2.5, color=colours[factor],
                        label=f"×{factor:g}")
                ax.fill_between(own["policy_step"], own["lower"], own["upper"], color=colours[factor], alpha=0.15)
                ax.scatter(last["policy_step"], last["mean"], s=40, facecolors="none", edgecolors=colours[factor])
            name = algorithm + (f" s={scale:g}" if pd.notna(scale) else "")
            ax.set_title(f"{name}, {dataset.split('/')[1]}/{dataset.split('/')[2]}", fontsize="small")
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize="x-small")
            if mine.empty:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes, fontsize="small")
        line[0].set_ylabel(score_label(datasets), fontsize="small")
        drawn = [ax for ax in line if ax.lines]
        if drawn:  # the legend on the panel with the most budgets (a row's first dataset may have none)
            max(drawn, key=lambda ax: len(ax.lines)).legend(fontsize="x-small")
    fig.tight_layout()
    return fig


def _budget_ratios(config: dict[str, Any], algorithm: str, preset: str) -> set[float]:
    """The run's step counts over its preset's, one per budget field the run sets (one value: a single budget
    factor)."""
    base = registry.make_config(algorithm, preset).to_dict()
    return {round(config[f] / base[f], 3) for f in registry.get(algorithm).budget_fields if base.get(f) and f in config}


def variant_settings(run: pd.Series, preset: str) -> str | None:
    """How a run at `preset` differs from the preset beyond one factor on its budget fields ("beta_q=0.0", the
    step counts of a run whose stages' budgets moved apart, or a reward transform other than its dataset's), or
    None if it does not: a variant tried beside a budget study, in the same store and sharing its stages."""
    if run["preset"] != preset:
        return None
    config = json.loads(run["config"])
    base = registry.make_config(run["algorithm"], preset).to_dict()
    budget = registry.get(run["algorithm"]).budget_fields
    differ = [f"{k}={config[k]}" for k, v in base.items()
              if k not in {*budget, "seed", "device"} and k in config and config[k] != v]
    if len(_budget_ratios(config, run["algorithm"], preset)) > 1:  # step counts moved apart, not one budget factor: a stage's own budget tried
        differ += [f"{f}={config[f]}" for f in budget if f in config and config[f] != base[f]]
    rewards = config.get("protocol", {}).get("reward_transform")
    if rewards is not None and rewards != catalog.default_reward_transform(run["dataset"]):
        differ.append(f"reward_transform={rewards}")
    return ", ".join(differ) or None


def _factor(run: pd.Series, preset: str) -> float | None:
    """The budget factor a run was made at: its step counts over its preset's; None if they disagree, or if any
    other setting differs from the preset's (a variant run beside the study, sharing its store and stages)."""
    if run["preset"] != preset or variant_settings(run, preset) is not None:
        return None
    ratios = _budget_ratios(json.loads(run["config"]), run["algorithm"], preset)
    return ratios.pop() if len(ratios) == 1 else None


def flattened_at(table: pd.DataFrame) -> pd.DataFrame:
    """Per algorithm entry (without its budget) and dataset: the smallest budget whose mean is within the largest
    budget's seed spread (one std, or the report's FLAT_TOLERANCE if larger) of the largest budget's mean: past it,
    more training did not move the score. `budgets`: how many were run (one cannot show where a curve flattens)."""
    rows = []
    for (algorithm, scale, dataset), g in table.groupby(["algorithm", "scale", "dataset"], dropna=False):
        g = g.sort_values("factor")
        top = g.iloc[-1]
        spread = max(top["std"] if pd.notna(top["std"]) else 0.0, reports.FLAT_TOLERANCE)
        within = g[(g["mean"] - top["mean"]).abs() <= spread]
        rows.append({"algorithm": algorithm, "scale": scale, "dataset": dataset, "largest": top["factor"],
                     "flat_from": float(within["factor"].min()), "largest_flat": top["flat"], "budgets": len(g)})
    return pd.DataFrame(rows)


def write(table: pd.DataFrame, out: Path, command: str, code: str, hardware: str, preset: str) -> Path:
    """results/budgets.md: one table per algorithm, and where each curve stopped moving."""
    from bench.reports.render import fmt, markdown_table, study_page, write_page

    lines = study_page("Training budgets: each algorithm at several budgets, with its learning curve", command, code,
                       hardware,
                       f"A budget is a factor on the step counts of every stage at the `{preset}` preset (each algorithm's "
             "`budget_fields`); scores are D4RL-normalised (on OGBench the success rate x 100), the last checkpoint, the final evaluation's episodes, "
             "mean ± std over seeds [95% bootstrap interval]; guided algorithms at s = 0 (their diffusion BC) and s = 1 "
             "(the exact tilt), fixed, not chosen. Core-minutes: the median run's wall time times the threads it held, "
             "evaluations included; training CPU-minutes: process CPU time up to the stage that made the policy, "
             "evaluations left out. `curve`: the learning curve's last two points on its own episodes (means over seeds; "
             "the final evaluation's episodes are others); `flat`: their change within the seeds' spread there (the larger of the two points' "
             "ranges over seeds) or under 1 point. `flat from`: the smallest budget "
             "whose mean is within the largest budget's seed std (at least 1 point) of the largest's mean. `Q_0 / data's return`: the "
             "critic check's Q_0 on dataset actions against the data's discounted returns, and their correlation "
             "(means over seeds; every algorithm with a critic).")
    if table.empty:
        return write_page(out, lines, "No finished run in the store.")
    flat = flattened_at(table)
    for algorithm, g in table.groupby("algorithm", sort=True):
        lines += [f"## {algorithm}", ""]
        shown = pd.DataFrame({
            "entry": g["entry"], "dataset": g["dataset"], "budget": g["factor"].map(lambda f: f"×{f:g}"),
            "gradient steps": g["gradient_steps"].map(lambda v: f"{v:,}"),
            "score": [f"{fmt(m)} ± {fmt(s)} [{fmt(lo)}, {fmt(hi)}]" for m, s, lo, hi in
                      zip(g["mean"], g["std"], g["ci_low"], g["ci_high"])],
            "seeds": g["seeds"], "core-min": g["core_minutes"].map(fmt), "train CPU-min": g["train_cpu_minutes"].map(fmt),
            "curve": [f"{fmt(a)} → {fmt(b)}" if pd.notna(a) else "—" for a, b in zip(g["before_last"], g["last"])],
            "Q_0 / data's return (corr.)": [f"{fmt(q)} / {fmt(m)} ({fmt(c, 2)})" if pd.notna(q) else "—"
                                            for q, m, c in zip(g["q_data"], g["mc_return"], g["q_correlation"])],
            "flat": g["flat"].map(lambda v: "—" if v is None or (isinstance(v, float) and np.isnan(v))
                                  else ("yes" if v else "no"))})
        lines += [markdown_table(shown), ""]
        mine = flat[flat["algorithm"] == algorithm]
        lines += ["Flat from: " + "; ".join(
            f"{d.split('/')[1]}/{d.split('/')[2]}" + (f" s={s:g}" if pd.notna(s) else "")
            + (f" ×{f:g}" if n > 1 else f" not judged (×{f:g} only)")
            for d, s, f, n in zip(mine["dataset"], mine["scale"], mine["flat_from"], mine["budgets"])) + ".", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    if not table.attrs.get("curves", pd.DataFrame()).empty:
        figure = out.with_suffix(".png")
        fig = curves_figure(table)
        fig.savefig(figure, dpi=110)
        lines += [f"![Learning curves at each budget]({figure.name})", "",
                  f"{figure.name}: each algorithm's learning curve at each budget (rows: algorithm, and scale for a "
                  "guided one; columns: datasets; band: 95% interval over seeds; ringed, apart from the line: the final "
                  "evaluation, on its own episodes).", ""]
    return write_page(out, lines)
