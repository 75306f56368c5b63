"""The quick benchmark: QGPO, its s = 0 ablation (diffusion BC) and the fine-tuning methods (DDPO, CTRL,
DxMI) on the embedded dataset, each from the same behaviour model and critic of a seed.

Guidance scale 0 samples the behaviour model alone, so the ablation reuses QGPO's trained run and costs
only its evaluation. The fine-tuning runs restore each seed's behaviour, support and critic stages from
QGPO's (the shared stages; same preset, same seed), so they pay only for their own stage. QGPO's runs come
first, one per worker, so that the shared stages are trained once per seed before the others need them.
The comparison is per seed first (each seed's mean over episodes), then across seeds, as the field
reports: a seed is the unit of replication, episodes are not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # imported where used: the CLI reads this module's defaults to build its --help
    import pandas as pd

    from bench.harness.runner import RunSpec
    from bench.harness.store import ResultsStore

DATASET = "diffbench/pointmaze/umaze-dense-small-v0"
SEEDS = (0, 1)
ALGORITHMS = ("qgpo", "ddpo", "ctrl", "dxmi")
GUIDANCE_SCALES = (0.0, 1.0, 3.0)
SELECTION_EPISODES = 25  # held-out episodes per scale that choose each seed's scale (a quarter of the reported 100)
LABELS = {"ddpo": "ddpo (fine-tuned by policy gradient on Q_0)", "ctrl": "ctrl (conditioned on high return-to-go)",
          "dxmi": "dxmi (few-step sampler tilted by Q_0)"}
CHOSEN = "qgpo, scale chosen on held-out episodes"


def specs(dataset: str = DATASET, seeds: Sequence[int] = SEEDS, preset: str = "quick",
          guidance_scales: Sequence[float] = GUIDANCE_SCALES, episodes: int | None = None,
          algorithms: Sequence[str] = ALGORITHMS, selection_episodes: int = SELECTION_EPISODES) -> list[RunSpec]:
    """QGPO's runs first (they train the shared stages), then each other algorithm's, seed by seed."""
    from bench.harness.runner import RunSpec

    order = sorted(algorithms, key=lambda a: a != "qgpo")
    return [RunSpec(algorithm=a, dataset=dataset, seed=seed, preset=preset, episodes=episodes,
                    **({"guidance_scales": tuple(float(s) for s in guidance_scales),
                        "selection_episodes": selection_episodes} if a == "qgpo" else {}))
            for a in order for seed in seeds]


def _method(row: pd.Series) -> str:
    import pandas as pd

    if row["algorithm"] != "qgpo" or pd.isna(row["guidance_scale"]):
        return LABELS.get(row["algorithm"], row["algorithm"])
    if row["selection"] == "held-out":
        return CHOSEN
    return "qgpo s = 0 (diffusion BC)" if row["guidance_scale"] == 0 else f"qgpo s = {row['guidance_scale']:g}"


def comparison(store: ResultsStore, run_ids: Sequence[str]) -> pd.DataFrame:
    """One row per method (QGPO at each guidance scale and at its held-out choice, each fine-tuning method):
    per-seed scores, their mean and std, the gain over s = 0, NFE per action and actions/s."""
    import pandas as pd

    from bench.reports.report import run_scores

    scores = run_scores(store)
    if scores.empty or not scores["run_id"].isin(run_ids).any():
        return pd.DataFrame()
    scores = scores[scores["run_id"].isin(run_ids) & scores["selection"].isin(["none", "held-out"])]
    scores = scores.assign(method=scores.apply(_method, axis=1))
    first = {run_id: i for i, run_id in enumerate(run_ids)}  # methods in the order their runs were asked for
    rank = scores.groupby("algorithm")["run_id"].agg(lambda ids: min(first[i] for i in ids))
    order = list(dict.fromkeys(scores.assign(rank=scores["algorithm"].map(rank))
                               .sort_values(["rank", "guidance_scale"], kind="stable")["method"]))
    if CHOSEN in order:  # after the scales it chose among
        order.remove(CHOSEN)
        order.insert(sum(m.startswith("qgpo s") for m in order), CHOSEN)
    per_seed = scores.groupby(["method", "seed"])["score"].mean().unstack("seed").reindex(order)
    per_seed.columns = [f"seed {s}" for s in per_seed.columns]
    table = per_seed.assign(mean=per_seed.mean(axis=1), std_over_seeds=per_seed.std(axis=1, ddof=1))
    by = scores.groupby("method")
    table["algorithm"] = by["algorithm"].first()
    table["guidance_scale"] = by["guidance_scale"].first().where(table["algorithm"] == "qgpo")
    s0 = "qgpo s = 0 (diffusion BC)"
    if s0 in table.index:
        table["gain_vs_s0"] = table["mean"] - table.loc[s0, "mean"]
        table["every_seed_above_s0"] = per_seed.min(axis=1) > per_seed.loc[s0].max()
    table["episodes_per_seed"] = by["episodes"].min()
    table["nfe_per_action"] = by["nfe_per_action"].first()
    table["actions_per_second"] = by["actions_per_second"].mean()
    return table.rename_axis("method").reset_index()


def format_table(table: pd.DataFrame) -> str:
    """Markdown, one row per method; the gain is over the s = 0 ablation (the behaviour model alone)."""
    import numpy as np
    import pandas as pd

    from bench.reports.render import fmt, markdown_table

    seeds = [c for c in table.columns if c.startswith("seed ")]
    rows = pd.DataFrame({"method": table["method"], "NFE per action": table["nfe_per_action"].map(
        lambda v: f"{v:g}" if pd.notna(v) else "")})
    for c in seeds:
        rows[c] = table[c].map(fmt)
    rows["mean ± std over seeds"] = [fmt(m) + (f" ± {fmt(sd)}" if np.isfinite(sd) else "")
                                     for m, sd in zip(table["mean"], table["std_over_seeds"])]
    gains = table["gain_vs_s0"] if "gain_vs_s0" in table else pd.Series(np.nan, index=table.index)
    rows["vs s = 0"] = ["" if m.startswith("qgpo s = 0") or not np.isfinite(g) else f"{g:+.1f}"
                        for m, g in zip(table["method"], gains)]
    return markdown_table(rows)


def summary_lines(store: ResultsStore, run_ids: Sequence[str]) -> list[str]:
    """Wall time and cost of each run, from the store. A run's wall time counts the shared stages it restored
    (what the policy cost); the time spent in the run itself is given beside it."""
    import pandas as pd

    runs = store.table("runs").set_index("run_id")
    out = []
    for run_id in run_ids:
        if run_id not in runs.index:
            continue
        r = runs.loc[run_id]
        wall = f"{r['wall_seconds'] / 60:.1f} min" if pd.notna(r["wall_seconds"]) else "?"
        own = r["finished"] - r["started"] if pd.notna(r["finished"]) and pd.notna(r["started"]) else None
        if own is not None and pd.notna(r["wall_seconds"]) and r["wall_seconds"] - own > 0.01:  # restored stages add their seconds
            wall += f" ({own / 60:.1f} min in this run, the rest in stages trained before and restored)"
        aps = f", {r['actions_per_second']:.0f} actions/s at evaluation" if pd.notna(r["actions_per_second"]) else ""
        chosen = (f"; guidance scale {r['selected_guidance_scale']:g} chosen on held-out episodes"
                  if pd.notna(r.get("selected_guidance_scale")) else "")
        out.append(f"{r['algorithm']} seed {r['seed']} [{run_id}]: {r['status']}, {wall}, "
                   f"{int(r['gradient_steps'] or 0)} gradient steps, {r['nfe_per_action']:g} NFE per action{aps}{chosen}")
    return out
