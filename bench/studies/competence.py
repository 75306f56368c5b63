"""Trained to competence? The checks a comparison needs before it is read, from a results store of runs at one preset
(`diffbench competence`, results/competence.md).

Each line is one claim with the figure it rests on and whether it holds:
  - diffusion BC (QGPO at s = 0) within MLP BC's 95% interval or above it, on every dataset; no seed more than
    10 points below the data's own score (the level imitating the data reaches);
  - on locomotion, QGPO at s = 1 (the exact tilt, no selection) at or above its own s = 0: the paired difference
    over seeds (the same run's two scales) with its 95% interval, not below zero; its Q_0 inside the range the
    rewards allow in every run;
  - Diffusion-QL and IDQL within MLP BC's interval or above it on hopper- and walker2d-medium-small;
  - every curve flattened by the end of its budget (its last two points' change within its seeds' spread there);
  - the median run's cost per algorithm on a -small dataset, at most 15 core-minutes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from bench.reports import report as reports
from bench.reports import stats
from bench.reports.render import claims_table, fmt, study_page, write_page
from bench.harness.provenance import run_threads
from bench.harness.store import ResultsStore
from bench.studies.budgets import _factor, variant_settings
from envs import families

BUDGET_MINUTES = 15.0
DATA_MARGIN = 10.0
# the diffusion methods that act through a critic, held to MLP BC on the critics' datasets: the issue's two, and
# SfBC, which selects among the shared behaviour model's samples by its returns network
CRITIC_BASELINES = ("diffusion_ql", "idql", "sfbc")
CRITIC_DATASETS = ("diffbench/hopper/medium-small-v0", "diffbench/walker2d/medium-small-v0")


def _entry(per: pd.DataFrame, dataset: str, algorithm: str, scale: float | None) -> pd.Series | None:
    rows = per[(per["dataset"] == dataset) & (per["algorithm"] == algorithm) & (per["selection"] == "none")]
    rows = rows[rows["guidance_scale"].isna()] if scale is None else rows[rows["guidance_scale"] == scale]
    return rows.iloc[0] if len(rows) == 1 else None


def at_least_bc(per: pd.DataFrame, dataset: str, algorithm: str, scale: float | None, what: str) -> dict:
    bc, other = _entry(per, dataset, "bc", None), _entry(per, dataset, algorithm, scale)
    if bc is None or other is None:
        return {"check": what, "dataset": dataset, "figure": "not run", "holds": None}
    holds = bool(other["mean"] >= bc["ci_low"])
    return {"check": what, "dataset": dataset, "holds": holds,
            "figure": f"{fmt(other['mean'])} ± {fmt(other['std'])} against MLP BC {fmt(bc['mean'])} "
                      f"[{fmt(bc['ci_low'])}, {fmt(bc['ci_high'])}]"}


def _seed_scores(scores: pd.DataFrame, dataset: str, algorithm: str, scale: float) -> pd.Series:
    g = scores[(scores["dataset"] == dataset) & (scores["algorithm"] == algorithm) & (scores["selection"] == "none")
               & (scores["guidance_scale"] == scale)]
    return g.set_index("seed")["score"].sort_index()


def _subset(store: ResultsStore, keep: pd.Series, where: Path) -> ResultsStore:
    """A copy of `store` in the folder `where` holding only the runs `keep` (run_id -> bool) marks."""
    where.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(store.path, where / store.path.name)
    copy = ResultsStore(where / store.path.name)
    if (~keep).any():
        copy.drop(keep.index[~keep])
    return copy


def at_preset(store: ResultsStore, preset: str, scratch: Path) -> ResultsStore:
    """A copy of `store` (in `scratch`) holding only the runs made at `preset`'s own budget (a budget study's store
    holds each algorithm at several)."""
    runs = store.table("runs")
    return _subset(store, pd.Series({r.run_id: _factor(r, preset) == 1.0 for _, r in runs.iterrows()}, dtype=bool),
                   scratch)


def variants(store: ResultsStore, preset: str, scratch: Path) -> dict[str, ResultsStore]:
    """Per variant setting (`variant_settings`), a copy of `store` in `scratch` with only its runs."""
    runs = store.table("runs")
    labels = pd.Series({r.run_id: variant_settings(r, preset) for _, r in runs.iterrows()}, dtype=object)
    return {label: _subset(store, labels == label, scratch / f"variant{i}")
            for i, label in enumerate(sorted(set(labels.dropna())))}


def variant_checks(stores: dict[str, ResultsStore]) -> pd.DataFrame:
    """For each variant: its score at each scale and, for a guided one on locomotion, the guidance checks (s = 1
    against s = 0, Q_0 in range), the same claims the preset's runs are held to."""
    rows = []
    for label, store in stores.items():
        report = reports.build(store)
        if report.empty:
            continue
        runs = store.table("runs")
        for r in report.per_dataset[report.per_dataset["selection"] == "none"].itertuples():
            scale = "" if pd.isna(r.guidance_scale) else f" s = {r.guidance_scale:g}"
            rows.append({"variant": label, "check": f"{r.algorithm}{scale} score", "dataset": r.dataset,
                         "figure": f"{fmt(r.mean)} ± {fmt(r.std)} [{fmt(r.ci_low)}, {fmt(r.ci_high)}], "
                                   f"{r.seeds} seeds", "holds": None})
        for dataset in sorted(report.per_dataset["dataset"].unique()):
            if families.family(dataset) == "locomotion":
                rows += [{"variant": label, **row} for row in guidance_rows(report.scores, runs, dataset)]
    return pd.DataFrame(rows, columns=["variant", "check", "dataset", "figure", "holds"])


def checks(store: ResultsStore) -> tuple[pd.DataFrame, reports.Report]:
    """One row per (claim, dataset or algorithm): the figure and whether it holds (None: not measured)."""
    report = reports.build(store)
    if report.empty:
        return pd.DataFrame(columns=["check", "dataset", "figure", "holds"]), report
    per, scores = report.per_dataset, report.scores
    data = report.data_reference.set_index("dataset")["score"] if not report.data_reference.empty else pd.Series()
    runs = store.table("runs")
    rows = []
    for dataset in sorted(per["dataset"].unique()):
        rows.append(at_least_bc(per, dataset, "qgpo", 0.0, "diffusion BC (QGPO s = 0) within MLP BC's 95% interval "
                                                            "or above"))
        seeds = _seed_scores(scores, dataset, "qgpo", 0.0)
        if dataset in data.index and len(seeds):
            worst = float(seeds.min())
            rows.append({"check": f"no seed's diffusion BC more than {DATA_MARGIN:g} below the data's own score",
                         "dataset": dataset, "holds": bool(worst >= data[dataset] - DATA_MARGIN),
                         "figure": f"worst seed {fmt(worst)} against the data's {fmt(data[dataset])}"})
        if families.family(dataset) == "locomotion":
            rows += guidance_rows(scores, runs, dataset)
        if dataset in CRITIC_DATASETS:
            rows += [at_least_bc(per, dataset, a, None, f"{a} within MLP BC's 95% interval or above")
                     for a in CRITIC_BASELINES]
    for r in report.plateau.itertuples():
        rows.append({"check": f"{r.entry}'s curve flat at the end of its budget", "dataset": r.dataset,
                     "holds": None if r.flat is None else bool(r.flat),
                     "figure": f"{fmt(r.before_last)} → {fmt(r.last)} (change {fmt(r.change)}, seeds' spread "
                               f"{fmt(r.seed_spread)}) at {r.steps:,} steps of {r.stage}"})
    rows += _cost_rows(runs)
    return pd.DataFrame(rows, columns=["check", "dataset", "figure", "holds"]), report


def guidance_rows(scores: pd.DataFrame, runs: pd.DataFrame, dataset: str) -> list[dict]:
    s0, s1 = _seed_scores(scores, dataset, "qgpo", 0.0), _seed_scores(scores, dataset, "qgpo", 1.0)
    shared = s0.index.intersection(s1.index)
    rows = []
    if len(shared):
        diff = (s1[shared] - s0[shared]).to_numpy(dtype=np.float64)
        point, low, high = stats.bootstrap_interval(stats.mean, diff[:, None], reps=reports.REPS)
        rows.append({"check": "QGPO s = 1 at or above its s = 0 (paired over seeds, interval not below zero)",
                     "dataset": dataset, "holds": bool(high >= 0),
                     "figure": f"s = 1 − s = 0: {point:+.1f} [{low:+.1f}, {high:+.1f}] over {len(shared)} seeds"})
    qgpo = runs[(runs["algorithm"] == "qgpo") & (runs["dataset"] == dataset) & runs["diagnostics"].notna()]
    checks_ = [json.loads(d).get("critic") for d in qgpo["diagnostics"]]
    checks_ = [c for c in checks_ if c]
    if checks_:
        outside = sum(bool(c["outside_bounds"]) for c in checks_)
        q = np.mean([c["q_data_mean"] for c in checks_])
        lo, hi = checks_[0]["value_bounds"]
        rows.append({"check": "QGPO's Q_0 inside the range its rewards allow, every run", "dataset": dataset,
                     "holds": outside == 0, "figure": f"Q_0 on dataset actions {fmt(q)} (mean of {len(checks_)} runs) "
                                                     f"in [{lo:.4g}, {hi:.4g}]; {outside} outside"})
    return rows


def _cost_rows(runs: pd.DataFrame) -> list[dict]:
    done = runs[(runs["status"] == "finished") & runs["dataset"].str.contains("-small")]
    rows = []
    for algorithm, g in done.groupby("algorithm"):
        threads = g["hardware"].map(run_threads)
        minutes = float((g["wall_seconds"] * threads).median() / 60)
        rows.append({"check": f"{algorithm}'s median run at most {BUDGET_MINUTES:g} core-minutes on a -small dataset",
                     "dataset": "", "holds": minutes <= BUDGET_MINUTES,
                     "figure": f"{fmt(minutes)} core-minutes (median of {len(g)} runs)"})
    return rows


def write(table: pd.DataFrame, report: reports.Report, out: Path, command: str, code: str, hardware: str,
          notes: list[str] | None = None, tried: pd.DataFrame | None = None) -> Path:
    lines = [*study_page("Trained to competence: the checks a comparison needs before it is read", command, code,
                         hardware, "Every figure is the store's, from the runs in it."),
             "## Protocol", "", *(f"- {p}" for p in report.protocol), ""]
    if table.empty:
        lines += ["No finished run in the store."]
    else:
        lines += ["## Checks", "", claims_table(table), ""]
        failed = table[table["holds"] == False]  # noqa: E712 (None means not measured)
        lines += [f"{int((table['holds'] == True).sum())} hold, {len(failed)} do not, "  # noqa: E712
                  f"{int(table['holds'].isna().sum())} not measured."]
    if tried is not None and not tried.empty:
        lines += ["", "## Variants run beside the preset", "",
                  "Runs in the same store whose settings differ from the preset's beyond its budget (each row names "
                  "the differing setting); they share the preset's stages where their settings allow and are held "
                  "to the same claims. They are not the preset; a setting that passes here is evidence for "
                  "changing the preset, not a pass of the checks above.", "",
                  claims_table(tried, unmeasured="")]
    if notes:
        lines += ["", "## What was tried where a check does not hold, and what the evidence says", "",
                  *(f"- {n}" for n in notes)]
    return write_page(out, lines)
