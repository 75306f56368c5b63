"""The report's figures (matplotlib, headless): each function returns a Figure for `bench.reports.render`."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # reports are built on servers and in CI; never open a window

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from bench.reports import stats  # noqa: E402
from envs import families  # noqa: E402


def _colours(entries: list[str]) -> dict[str, tuple]:
    """A distinct colour per entry: matplotlib's 10-colour cycle while it suffices, else tab20's 20 (a leaderboard
    with every algorithm and scale has more entries than the default cycle tells apart)."""
    if len(entries) <= 10:
        cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    else:
        cycle = list(plt.get_cmap("tab20").colors)
    return {e: cycle[i % len(cycle)] for i, e in enumerate(entries)}


MARKERS = "os^Dv<>pPX*h"


def _legend_below(fig: Figure, axes: np.ndarray, columns: int, row_inches: float, height: float,
                  fontsize: str) -> None:
    """One legend for every panel, below them, where it covers no point; the panels keep the height above it."""
    handles: dict = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(columns, max(1, len(handles))),
               fontsize=fontsize)
    rows = -(-len(handles) // columns)
    fig.tight_layout(rect=(0, (row_inches * rows + 0.3) / height, 1, 1))


def _markers(entries: list[str]) -> dict[str, str]:
    """A marker per entry beside its colour, so that entries past the palette's size stay apart."""
    return {e: MARKERS[(i // 20) % len(MARKERS)] if len(entries) > 10 else "o" for i, e in enumerate(entries)}


def aggregate_intervals(aggregates: pd.DataFrame) -> Figure:
    """One panel per metric: each entry's estimate and 95% interval, as Agarwal et al.'s Fig. 9."""
    metrics = list(dict.fromkeys(aggregates["metric"]))
    entries = sorted(aggregates["entry"].unique())
    colours = _colours(entries)
    # an entry's aggregate is over the datasets it ran on: the count stands in its label, so that entries over
    # different sets of datasets are not read as one comparison
    held = aggregates.groupby("entry")["datasets"].first()
    labels = [f"{e}  [{held[e]} dataset{'s' if held[e] != 1 else ''}]" for e in entries]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 0.5 * len(entries) + 1.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        rows = aggregates[aggregates["metric"] == metric].set_index("entry")
        for y, entry in enumerate(entries):
            if entry not in rows.index:
                continue
            r = rows.loc[entry]
            ax.plot([r["lower"], r["upper"]], [y, y], color=colours[entry], linewidth=6, alpha=0.6,
                    solid_capstyle="butt")
            ax.plot([r["estimate"]], [y], "|", color="black", markersize=14)
        ax.set_yticks(range(len(entries)), labels if ax is axes[0][0] else [""] * len(entries))
        gap = metric == "optimality gap"
        ax.set_title(f"{metric}\n({'lower' if gap else 'higher'} is better)", fontsize="medium")
        ax.set_xlabel("normalised points short of 100" if gap else "normalised score")
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def performance_profiles(scores: dict[str, np.ndarray]) -> Figure:
    """Fraction of runs above each score threshold, with a 95% bootstrap band, per entry."""
    top = max(100.0, max(float(np.max(m)) for m in scores.values()))
    taus = np.linspace(min(0.0, min(float(np.min(m)) for m in scores.values())), top, 101)
    entries = sorted(scores)
    colours, markers = _colours(entries), _markers(entries)
    bands = len(entries) <= 6  # past a handful, overlapping bands hide the lines: lines only, and the caption says so
    fig, ax = plt.subplots(figsize=(9 if len(entries) > 6 else 6.5, 4.2))
    for entry in entries:
        profile, low, high = stats.performance_profile_band(scores[entry], taus, reps=500)
        held = scores[entry].shape[1]  # its datasets, as the aggregates label it: profiles over different sets differ
        ax.plot(taus, profile, color=colours[entry], label=f"{entry}  [{held} dataset{'s' if held != 1 else ''}]",
                marker=markers[entry], markevery=10, markersize=4)
        if bands:
            ax.fill_between(taus, low, high, color=colours[entry], alpha=0.15)
    ax.set_xlabel("normalised score τ")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("performance profiles" + (" with 95% bands" if bands else " (bands left out: too many entries)"),
                 fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


def score_label(datasets: list[str]) -> str:
    """OGBench's score is a success rate, not a normalised return: the axis says which a panel shows."""
    kinds = {families.family(d) == "ogbench-manipulation" for d in datasets}
    return {frozenset({True}): "success rate (%)", frozenset({False}): "normalised score"}.get(
        frozenset(kinds), "normalised score (OGBench: success %)")


def learning_curves(curves: pd.DataFrame) -> Figure:
    """Score against the steps of the stage that made the policy (top) and against the run's training CPU-minutes
    (bottom), one panel per dataset, one line per entry through the points on the curve's own episodes; band: 95%
    interval over seeds; the final evaluation, on other episodes, ringed and not joined to the line."""
    datasets = sorted(curves["dataset"].unique())
    entries = sorted(curves["entry"].unique())
    colours, markers = _colours(entries), _markers(entries)
    legend_rows = -(-len(entries) // 4)
    height = 7.2 + 0.22 * legend_rows + 0.3
    fig, axes = plt.subplots(2, len(datasets), figsize=(max(5 * len(datasets), 12), height), squeeze=False)
    for col, dataset in enumerate(datasets):
        for (entry, stage), g in curves[curves["dataset"] == dataset].groupby(["entry", "policy_stage"]):
            g = g.sort_values("policy_step")
            line, final = g[~g["final"].astype(bool)], g[g["final"].astype(bool)]
            # a stage before the one that made the entry's policy (DxMI's imitation): dashed, named, its own steps
            earlier = "last_stage" in g and not g["last_stage"].all()
            for ax, x in ((axes[0][col], "policy_step"), (axes[1][col], "cpu_seconds")):
                scale = 1 / 60 if x == "cpu_seconds" else 1
                ax.plot(line[x] * scale, line["mean"], marker=markers[entry], markersize=3, color=colours[entry],
                        linestyle="--" if earlier else "-", label=f"{entry} ({stage})" if earlier else entry)
                ax.fill_between(line[x] * scale, line["lower"], line["upper"], color=colours[entry], alpha=0.2)
                ax.scatter(final[x] * scale, final["mean"], s=60, facecolors="none", edgecolors=colours[entry])
        axes[0][col].set_title(dataset, fontsize="small")
        axes[0][col].set_xlabel("gradient steps of the stage that makes the policy")
        axes[1][col].set_xlabel("training CPU-minutes (all stages so far)")
        for ax in axes[:, col]:
            ax.set_ylabel(score_label([dataset]))
            ax.grid(alpha=0.3)
    _legend_below(fig, axes, columns=4, row_inches=0.22, height=height, fontsize="x-small")
    return fig


def score_vs_cost(cost: pd.DataFrame) -> Figure:
    """Per dataset (one row each: scores are never averaged over different sets of datasets), the mean score against
    network evaluations per action and training core-minutes: what each score cost."""
    cost = cost.assign(network_evals=cost["nfe_per_action"] + cost["energy_grads_per_action"])
    panels = [("network_evals", "network evaluations per action\n(a diffusion policy's denoising steps and energy "
                                "gradients; 1 for an MLP policy)"),
              ("core_minutes", "training core-minutes per run (all stages)")]
    datasets = sorted(cost["dataset"].unique())
    entries = sorted(cost["entry"].unique())
    colours, markers = _colours(entries), _markers(entries)
    legend_rows = -(-len(entries) // 3)
    height = 3.4 * len(datasets) + 0.25 * legend_rows + 0.4
    fig, axes = plt.subplots(len(datasets), 2, figsize=(11, height), squeeze=False)
    for row, dataset in enumerate(datasets):
        here = cost[cost["dataset"] == dataset]
        for ax, (column, label) in zip(axes[row], panels):
            for _, r in here.iterrows():
                if pd.notna(r[column]):
                    ax.scatter(r[column], r["score"], color=colours[r["entry"]], marker=markers[r["entry"]],
                               label=r["entry"], s=40)
            values = here[column].dropna()
            if len(values) and (values > 0).all() and values.max() / values.min() > 30:  # spans decades
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel(label, fontsize="small")
            ax.set_ylabel("mean " + score_label([dataset]))
            ax.set_title(dataset, fontsize="small")
            ax.grid(alpha=0.3)
    _legend_below(fig, axes, columns=3, row_inches=0.25, height=height, fontsize="small")
    return fig
