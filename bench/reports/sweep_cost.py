"""Where a sweep's core-hours go (`diffbench perf sweep SPEC`): per algorithm and per stage, from what its runs
recorded in the store, so that speed work goes where the time is.

Each finished run of the spec (by run id) contributes what it spent itself: the training stages it trained
(stage seconds exclude evaluation; a stage restored from another run's shared checkpoint cost nothing here and
is counted in the run that trained it), its periodic, selection and final evaluations, and the rest of its wall
time (loading data, building envs and networks, writing checkpoints and the store). Seconds are wall seconds
times the torch threads the run held: core-seconds, the currency of a sweep on N single-threaded workers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from bench.harness.cost_model import Estimate, estimate
from bench.harness.plan import read_ids
from bench.harness.provenance import run_threads
from bench.harness.store import ResultsStore
from bench.harness.runner import START, RunSpec
from bench.harness.sweep import SweepSpec
from policies.competence import family_shortfall

EVALUATIONS = {"final": "final evaluation", "selection": "scale selection", START: "start evaluation"}
PERIODIC = "periodic evaluation"
OTHER = "other (data, envs, checkpoints, store)"
NONE_FOUND = ("No finished run of the spec's is in the store: make them with `diffbench sweep {spec} --results "
              "{store}`.")


def spec_ids(spec: SweepSpec, store: ResultsStore) -> list[tuple[RunSpec, str]]:
    """Each of the spec's runs with the id the store holds it under (`plan.read_ids`: an id hashes the dataset's
    content; computed once per report)."""
    runs = spec.runs()
    return list(zip(runs, read_ids(runs, store.table("runs"))))


def finished_runs(store: ResultsStore, spec: SweepSpec, planned: list[tuple[RunSpec, str]] | None = None) -> pd.DataFrame:
    """The store's rows of the spec's finished runs (by run id: other runs in a shared store are not read).
    `planned`: `spec_ids(spec, store)`, if computed."""
    ids = {run_id for _, run_id in (spec_ids(spec, store) if planned is None else planned)}
    runs = store.table("runs")
    return runs[runs["run_id"].isin(ids) & (runs["status"] == "finished")]


def run_costs(store: ResultsStore, spec: SweepSpec, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (finished run of the spec, cost category): core-seconds. `runs`: `finished_runs`, if read."""
    runs = finished_runs(store, spec) if runs is None else runs
    evals = store.table("evaluations")
    evals = evals[evals["run_id"].isin(runs["run_id"])]
    evals = evals.assign(category=evals["stage"].map(EVALUATIONS).fillna(PERIODIC))
    eval_seconds = evals.groupby(["run_id", "category"])["seconds"].sum()
    rows = []
    for run in runs.itertuples():
        threads = run_threads(run.hardware)
        stages = json.loads(run.stage_seconds) if run.stage_seconds else {}
        shared = set(json.loads(run.shared_stages)) if run.shared_stages else set()
        trained = {stage: s for stage, s in stages.items() if stage not in shared}
        spent = run.finished - run.started  # this run's own wall time (not the restored stages')
        own_evals = eval_seconds.get(run.run_id, pd.Series(dtype=float))
        parts = {**{f"train: {stage}": s for stage, s in trained.items()}, **own_evals.to_dict(),
                 OTHER: max(spent - sum(trained.values()) - float(own_evals.sum()), 0.0)}
        rows += [{"run_id": run.run_id, "algorithm": run.algorithm, "dataset": run.dataset, "seed": run.seed,
                  "category": category, "core_seconds": seconds * threads} for category, seconds in parts.items()]
    return pd.DataFrame(rows, columns=["run_id", "algorithm", "dataset", "seed", "category", "core_seconds"])


def cost_tables(costs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per algorithm: runs, core-hours and each category's share of the sweep; per category across the sweep)."""
    total = costs["core_seconds"].sum()
    by_algo = costs.groupby("algorithm").agg(runs=("run_id", "nunique"), core_seconds=("core_seconds", "sum"))
    wide = costs.pivot_table(index="algorithm", columns="category", values="core_seconds", aggfunc="sum", fill_value=0.0)
    per_algorithm = pd.DataFrame({
        "runs": by_algo["runs"], "core-min": (by_algo["core_seconds"] / 60).round(1),
        "core-min per run": (by_algo["core_seconds"] / by_algo["runs"] / 60).round(1),
        "share of sweep": (100 * by_algo["core_seconds"] / total).map(lambda v: f"{v:.1f}%"),
        "largest part": [f"{wide.loc[a].idxmax()} ({100 * wide.loc[a].max() / by_algo.loc[a, 'core_seconds']:.0f}%)"
                         for a in by_algo.index]}).sort_values("core-min", ascending=False)
    per_category = (costs.groupby("category")["core_seconds"].sum().sort_values(ascending=False)
                    .to_frame("core_seconds"))
    per_category = pd.DataFrame({"core-min": (per_category["core_seconds"] / 60).round(1),
                                 "share of sweep": (100 * per_category["core_seconds"] / total).map(lambda v: f"{v:.1f}%"),
                                 "algorithms": [", ".join(sorted(costs.loc[costs["category"] == c, "algorithm"].unique()))
                                                for c in per_category.index]})
    return per_algorithm.reset_index(), per_category.rename_axis("category").reset_index()


def _per_run(store: ResultsStore, spec: SweepSpec) -> pd.DataFrame:
    """Every finished run in the store (any sweep, any code version): its core-seconds per category, and domain."""
    from bench.reports.report import domain

    every = store.table("runs")
    every = every[every["status"] == "finished"]
    costs = run_costs(store, spec, every)
    return costs.assign(domain=costs["dataset"].map(domain))


def _means(per_run: pd.DataFrame) -> dict[tuple[str, str], float]:
    """(algorithm, domain) -> the mean own core-seconds of its finished runs there."""
    own = per_run.groupby(["run_id", "algorithm", "domain"])["core_seconds"].sum().reset_index()
    return own.groupby(["algorithm", "domain"])["core_seconds"].mean().to_dict()


def _basis(per_run: pd.DataFrame, means: dict[tuple[str, str], float], algorithm: str, where: str
           ) -> tuple[pd.DataFrame, Estimate | None]:
    """The finished runs an estimate for (algorithm, domain) rests on (that domain's, else every domain's), and the
    estimate of a run's own cost there (`cost_model`: another domain's scaled by the domains' cost ratio)."""
    found = estimate(means, algorithm, where)
    same = per_run[(per_run["algorithm"] == algorithm) & (per_run["domain"] == where)]
    return (same if len(same) else per_run[per_run["algorithm"] == algorithm]), found


def _planned_by_domain(planned: list[tuple[RunSpec, str]], skip: set[str] = frozenset()) -> dict[tuple[str, str], int]:
    from bench.reports.report import domain

    counts: dict[tuple[str, str], int] = {}
    for run, run_id in planned:
        if run_id not in skip:
            key = (run.algorithm, domain(run.dataset))
            counts[key] = counts.get(key, 0) + 1
    return counts


def projection(store: ResultsStore, spec: SweepSpec, planned: list[tuple[RunSpec, str]], mine: pd.DataFrame
               ) -> pd.DataFrame:
    """Per algorithm, the spec's runs not yet finished and the core-hours they would take at the mean own cost of
    that algorithm's finished runs anywhere in the store (other sweeps, other code versions): on the same
    domain where it has any, else on the domains it has, scaled by their cost ratio for the algorithms with runs on
    both. An estimate for planning, not a measurement."""
    per_run = _per_run(store, spec)
    means = _means(per_run)
    rows = []
    for (algorithm, where), n in sorted(_planned_by_domain(planned, set(mine["run_id"])).items()):
        basis, found = _basis(per_run, means, algorithm, where)
        runs = basis["run_id"].nunique()
        rows.append({"algorithm": algorithm, "domain": where, "runs left": n,
                     "core-min per run": round(found.seconds / 60, 1) if found else "?",
                     "projected core-hours": round(n * found.seconds / 3600, 2) if found else "?",
                     "from": found.describe(runs) if found else "no finished run of it in the store"})
    return pd.DataFrame(rows, columns=["algorithm", "domain", "runs left", "core-min per run", "projected core-hours",
                                       "from"])


def whole_spec(store: ResultsStore, spec: SweepSpec, planned: list[tuple[RunSpec, str]]) -> pd.DataFrame:
    """The whole spec's core-seconds per algorithm, category and rank (`short`: the runs declared short of
    competence) at the mean per-run cost of each category in the algorithm's finished runs in the store (same
    domain where there are some, else scaled from the domains it has), finished runs included."""
    per_run = _per_run(store, spec)
    means = _means(per_run)
    short = _short_groups(spec, planned)
    rows = []
    for (algorithm, where), n in sorted(_planned_by_domain(planned).items()):
        basis, found = _basis(per_run, means, algorithm, where)
        if found is None:
            continue
        runs = basis["run_id"].nunique()
        # categories in the basis runs' proportions, scaled to the estimate of a run's cost on this domain
        pooled = basis["core_seconds"].sum() / runs
        scale = found.seconds / pooled if pooled > 0 else 1.0
        for category, seconds in basis.groupby("category")["core_seconds"].sum().items():
            rows.append({"algorithm": algorithm, "category": category, "short": (algorithm, where) in short,
                         "core_seconds": n * scale * seconds / runs})
    frame = pd.DataFrame(rows, columns=["algorithm", "category", "short", "core_seconds"])
    return frame.groupby(["algorithm", "category", "short"], as_index=False)["core_seconds"].sum()


def project(costs: pd.DataFrame, ratio_table: pd.DataFrame) -> pd.DataFrame:
    """A sweep's cost per algorithm (`costs`: core-seconds per algorithm and category, after the change) beside
    what it would have cost before: each category times the probe's before/after ratio for it (the algorithm's
    whole-probe ratio where the probe has no such category)."""
    r = ratio_table.dropna(subset=["ratio"]).set_index(["algorithm", "category"])["ratio"]
    probe = ratio_table.dropna(subset=["before", "after"]).groupby("algorithm")[["before", "after"]].sum()
    whole = probe["before"] / probe["after"]
    rows = []
    for (algorithm, category), seconds in costs.groupby(["algorithm", "category"])["core_seconds"].sum().items():
        factor = r.get((algorithm, category), whole.get(algorithm, np.nan))
        rows.append({"algorithm": algorithm, "category": category, "after": seconds, "before": seconds * factor})
    return pd.DataFrame(rows, columns=["algorithm", "category", "after", "before"])


def before_after(store: ResultsStore, spec: SweepSpec, planned: list[tuple[RunSpec, str]], speedup: pd.DataFrame
                 ) -> tuple[pd.DataFrame, list[str]]:
    """Per algorithm, the whole spec's core-hours now and before the change `speedup` measured (each category
    times its measured before/after ratio), and the lines that say how."""
    costs = whole_spec(store, spec, planned)
    projected = project(costs, speedup)
    per_algo = projected.groupby("algorithm")[["before", "after"]].sum() / 3600
    per_algo = per_algo.assign(ratio=per_algo["before"] / per_algo["after"]).sort_values("after", ascending=False)
    total_b, total_a = per_algo["before"].sum(), per_algo["after"].sum()
    table = pd.DataFrame({"algorithm": per_algo.index, "core-hours before": per_algo["before"].round(2).values,
                          "core-hours after": per_algo["after"].round(2).values,
                          "before / after": per_algo["ratio"].round(2).values})
    table.loc[len(table)] = ["all", round(total_b, 2), round(total_a, 2), round(total_b / total_a, 2)]
    missing = sorted({run.algorithm for run, _ in planned} - set(per_algo.index))
    ranked = project(costs[~costs["short"]], speedup)
    ranked_b, ranked_a = ranked["before"].sum() / 3600, ranked["after"].sum() / 3600
    short = _short_names(spec, planned)
    lines = [f"The whole spec ({len(planned)} runs) at the store's mean per-run cost of each algorithm and category "
             "(same domain where there are finished runs; the projection's basis): \"after\". \"Before\": each "
             "category times the before/after ratio that `diffbench perf speedup` measured for it, side by side on "
             f"this machine (its CSV: {speedup.attrs.get('source', '?')}, before = {speedup.attrs.get('before', '?')}"
             f", after = {speedup.attrs.get('after', '?')}). Whole spec: {total_b:.1f} core-hours before, "
             f"{total_a:.1f} after, {total_b / total_a:.2f}x."
             + (f" Without the runs declared short of competence ({short}: ranked nowhere), what the boards need: "
                f"{ranked_b:.1f} before, {ranked_a:.1f} after, {ranked_b / ranked_a:.2f}x." if short else "")
             + " A ratio a few percent either side of 1 for an algorithm whose code did not change is the "
             "measurement's noise (each category is one probe run per version)."
             + (f" Not in either: {', '.join(missing)} (no finished run in the store)." if missing else "")]
    return table, lines


def _short_groups(spec: SweepSpec, planned: list[tuple[RunSpec, str]]) -> set[tuple[str, str]]:
    """(algorithm, domain) groups whose every run's preset is declared short of competence there (`SweepSpec.is_short`)."""
    from bench.reports.report import domain

    groups: dict[tuple[str, str], list[bool]] = {}
    for run, _ in planned:
        groups.setdefault((run.algorithm, domain(run.dataset)), []).append(spec.is_short(run))
    return {key for key, short in groups.items() if all(short)}


def _short_names(spec: SweepSpec, planned: list[tuple[RunSpec, str]]) -> str:
    """What is declared short of competence, in words: whole algorithms, then whole domains."""
    from bench.reports.report import domain

    whole = [f"{a}[{spec.preset}]" for a in sorted(spec.short_of_competence())]
    domains = sorted({domain(run.dataset) for run, _ in planned if family_shortfall(spec.preset, run.dataset)})
    return "; ".join([*([", ".join(whole) + " everywhere"] if whole else []),
                      *(f"every algorithm on {d}" for d in domains)])


def _short_share(spec: SweepSpec, planned: list[tuple[RunSpec, str]], left: pd.DataFrame, known: pd.Series) -> str:
    """The part of the projection that goes to runs whose preset is declared short of competence (shown, ranked
    nowhere, made after every ranked run), so that what the boards need is read apart from it."""
    short = _short_groups(spec, planned)
    if not short:
        return ""
    part = known[[(a, d) in short for a, d in zip(left["algorithm"], left["domain"])]].sum()
    return (f" Of these, {part:.1f} core-hours are runs declared short of competence at this preset "
            f"({_short_names(spec, planned)}): shown, ranked nowhere, and made after every ranked run; the boards "
            f"need the other {known.sum() - part:.1f}.")


def total_core_hours(costs: pd.DataFrame) -> float:
    return float(costs["core_seconds"].sum() / 3600) if len(costs) else float(np.nan)


def write(store: ResultsStore, spec: SweepSpec, spec_path: str, out, command: str,
          speedup: pd.DataFrame | None = None) -> pd.DataFrame:
    """The markdown report (and the per-run rows as CSV beside it); with `speedup` (`diffbench perf speedup`'s
    ratios), the whole spec's cost before and after the change it measured."""
    from pathlib import Path

    from bench.reports.render import markdown_table

    planned = spec_ids(spec, store)
    mine = finished_runs(store, spec, planned)
    costs = run_costs(store, spec, mine)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    costs.to_csv(out.with_suffix(".csv"), index=False)
    hardware = sorted({json.loads(h).get("description", "?") for h in mine["hardware"].dropna()})
    lines = [f"# Sweep cost: {spec_path}", "",
             f"Made by `{command}` from the results store; do not edit by hand. {costs['run_id'].nunique()} of the "
             f"spec's {len(planned)} runs finished, on {'; '.join(hardware) or '?'}; code "
             f"{', '.join(sorted(mine['code_version'].dropna().unique())) or '?'}.", "",
             f"Core-hours: wall seconds times the torch threads each run held, {total_core_hours(costs):.2f} in all. "
             "A training stage restored from another run's shared checkpoint is counted once, in the run that "
             "trained it; evaluation time is apart from the stages'; `other` is the rest of each run's own wall "
             "time (data, env and network set-up, checkpoint and store writes). A run resumed after an interruption "
             "counts only its last attempt's wall time.", ""]
    if not len(costs):
        lines += [NONE_FOUND.format(spec=spec_path, store=store.path.parent), ""]
    else:
        per_algorithm, per_category = cost_tables(costs)
        lines += ["## Per algorithm", "", markdown_table(per_algorithm), "",
                  "## Per stage, across the sweep", "", markdown_table(per_category), ""]
    left = projection(store, spec, planned, mine)
    if len(left):
        known = pd.to_numeric(left["projected core-hours"], errors="coerce")
        lines += ["## What is left, projected", "",
                  f"{int(left['runs left'].sum())} runs of the spec are not finished. Projected at the mean own "
                  "cost of each algorithm's finished runs in the store (any sweep, any code version; on the same "
                  "domain where there are some, else on the domains it has, scaled by their cost ratio for the "
                  "algorithms with runs on both), they would take about "
                  f"{known.sum():.1f} core-hours" + (" besides the runs of algorithms with no finished run"
                                                     if known.isna().any() else "") +
                  ": an estimate for planning, not a measurement. Runs made under load (more processes than cores) "
                  "count their wall time, so it errs high." + _short_share(spec, planned, left, known), "",
                  markdown_table(left), ""]
    if speedup is not None:
        table, said = before_after(store, spec, planned, speedup)
        lines += ["## Before and after", "", *said, "", markdown_table(table), ""]
    out.write_text("\n".join(lines))
    return costs
