"""A sweep's algorithms against one baseline, dataset by dataset, decided by paired per-seed intervals
(`diffbench compare --spec SPEC --baseline ALGO`).

Runs of one seed share that seed's data order and, where they share stages, the very behaviour model and critic
(SRPO restores QGPO's behaviour model and IDQL's critic), so each algorithm is set against the baseline seed by
seed: the mean of the per-seed differences and its 95% t-interval. "better" and "worse" are intervals that
exclude zero; an interval that covers it is a tie, whatever the two means say. Only the spec's own runs (its run
ids) are read, so older runs of the same algorithm in a shared store never leak in. A guided algorithm
(QGPO) stands by the scale each run chose on its held-out episodes, never by a scale picked on the scored ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from bench.harness.plan import read_ids
from bench.harness.sweep import SweepSpec
from bench.reports.report import (_core_minutes, curve_points, data_references, plateaus, run_scores,
                                  short_of_competence)
from bench.reports.sweep_cost import NONE_FOUND
from bench.reports.render import markdown_table
from bench.studies.paired import paired, verdict
from policies.errors import ConfigError


def spec_scores(scores: pd.DataFrame, spec: SweepSpec, ids: set[str] | None = None) -> pd.DataFrame:
    """The per-seed score rows of the spec's runs (`ids`: their run ids, when the caller has them), one entry per
    (algorithm, dataset): a guided run's held-out choice, every other run's own policy."""
    ids = {run.run_id() for run in spec.runs()} if ids is None else ids
    mine = scores[scores["run_id"].isin(ids)]
    held_out = mine["selection"] == "held-out"
    guided = set(mine.loc[held_out, "run_id"])
    keep = held_out | ((mine["selection"] == "none") & ~mine["run_id"].isin(guided))
    return mine[keep].assign(base_dataset=mine["dataset"].str.split(" @").str[0])


def versus(df: pd.DataFrame, spec: SweepSpec, baseline: str, speed: pd.DataFrame | None = None,
           plateau: pd.DataFrame | None = None) -> tuple[pd.DataFrame, list[str]]:
    """One row per (dataset, algorithm) of the spec (`df`: its `spec_scores`): score over seeds, the paired difference to `baseline` and its
    verdict, NFE per action, the benchmark's actions/s (`speed`: by algorithm, from `perf_acting.rates`) and
    its ratio to the baseline's, the median run's core-minutes, and (`plateau`: `report.plateaus` of the runs'
    learning curves) each curve's last two points and whether it had flattened; and notes on what is missing."""
    if baseline not in spec.algorithms:
        raise ConfigError(f"--baseline {baseline} is not among the spec's algorithms ({', '.join(spec.algorithms)})")
    rows, notes = [], []
    short = short_of_competence(df)
    for dataset in spec.datasets:
        here = df[df["base_dataset"] == dataset]
        base = here[here["algorithm"] == baseline]
        for algorithm in spec.algorithms:
            own = here[here["algorithm"] == algorithm]
            if own.empty:
                notes.append(f"{algorithm} on {dataset}: no finished run of the spec's yet")
                continue
            seeds = own.groupby("seed")["score"].mean()
            missing = sorted(set(spec.seeds) - set(seeds.index))
            if missing:
                notes.append(f"{algorithm} on {dataset}: seeds {', '.join(map(str, missing))} not finished")
            diff = paired(own, base, "score") if algorithm != baseline else None
            rows.append({"dataset": dataset, "algorithm": algorithm, "entry": own["entry"].iloc[0],
                         "seeds": len(seeds),
                         "score": f"{seeds.mean():.1f} ± {seeds.std(ddof=1):.1f}" if len(seeds) > 1 else f"{seeds.mean():.1f}",
                         f"− {baseline}, paired [95% CI]": diff.text(1) if diff else "",
                         "verdict": (verdict(diff) if diff else "baseline")
                         + (" †" if own["entry"].iloc[0] in short else ""),
                         "NFE per action": _nfe(own, speed, algorithm),
                         **_speed(speed, algorithm, baseline),
                         "core-min per run": f"{own.apply(_core_minutes, axis=1).median():.1f}",
                         **({"curve (last two points), flat": _curve(plateau, own)} if plateau is not None else {})})
    return pd.DataFrame(rows), notes


def _curve(plateau: pd.DataFrame, own: pd.DataFrame) -> str:
    """The entry's curve, or for a guided run's held-out choice the curve at each scale it chose among."""
    if plateau.empty:
        return "–"
    run_entry = own["run_entry"].iloc[0]
    entry = plateau["entry"]
    mine = plateau[(plateau["dataset"] == own["dataset"].iloc[0])
                   & ((entry == own["entry"].iloc[0]) | entry.str.startswith(run_entry + " s="))]
    parts = [f"{r.entry[len(run_entry):].strip() + ': ' if len(mine) > 1 else ''}{r.before_last:.1f} → {r.last:.1f}, "
             f"{'yes' if r.flat else 'no' if r.flat is not None else '?'}" for r in mine.itertuples()]
    return "; ".join(parts) or "–"


def _nfe(own: pd.DataFrame, speed: pd.DataFrame | None, algorithm: str) -> str:
    value = own["nfe_per_action"].median()
    if np.isnan(value) and speed is not None and algorithm in speed.index:
        value = speed.loc[algorithm, "nfe_per_action"]
    return "–" if np.isnan(value) else f"{value:g}"


def _speed(speed: pd.DataFrame | None, algorithm: str, baseline: str) -> dict[str, str]:
    if speed is None:
        return {}
    rate = speed["actions_per_second"].get(algorithm, np.nan)
    ref = speed["actions_per_second"].get(baseline, np.nan)
    return {"actions/s, batch 10": "–" if np.isnan(rate) else f"{rate:,.0f}",
            f"× {baseline}": "–" if np.isnan(rate) or np.isnan(ref) else f"{rate / ref:.1f}×"}


def table(store, spec: SweepSpec, baseline: str, speed: pd.DataFrame | None = None
          ) -> tuple[pd.DataFrame, list[str], pd.DataFrame]:
    """`versus` on the store's runs of the spec, with their learning curves: (rows, notes, the runs' scores)."""
    ids = set(read_ids(spec.runs(), store.table("runs")))
    scores = run_scores(store, ids)
    mine = spec_scores(scores, spec, ids) if not scores.empty else scores
    curves = plateaus(curve_points(store, mine)) if not mine.empty else pd.DataFrame()
    rows, notes = versus(mine, spec, baseline, speed, curves)
    return rows, notes, mine


def write(store, spec: SweepSpec, spec_path: str, baseline: str, out: Path, command: str,
          speed: pd.DataFrame | None = None, speed_path: str | None = None) -> pd.DataFrame:
    """The markdown report (and its rows as CSV beside it)."""
    if run_scores(store).empty:
        raise ConfigError(f"{store.path} holds no finished run with evaluation episodes; run the spec first: "
                          f"diffbench sweep {spec_path} --results {store.path}")
    rows, notes, mine = table(store, spec, baseline, speed)
    codes = sorted(mine["code_version"].dropna().unique())
    hardware = sorted({json.loads(h).get("description", "?") for h in mine["hardware"].dropna()})
    out.parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(out.with_suffix(".csv"), index=False)
    lines = [f"# {', '.join(a for a in spec.algorithms if a != baseline)} against {baseline}", "",
             f"Made by `{command}` from the results store; do not edit by hand. Runs: {spec_path} at the "
             f"`{spec.preset}` preset, seeds {', '.join(map(str, spec.seeds))}; code {', '.join(codes) or '?'}; "
             f"hardware {'; '.join(hardware) or '?'}.", "",
             "Score: D4RL-normalised, each seed's mean over its final evaluation's episodes, then mean ± std over "
             f"seeds. `− {baseline}, paired`: the mean of the per-seed differences to {baseline} on the same seed, "
             "with its 95% t-interval; `better`/`worse` when the interval excludes zero, `tie` when it covers it. "
             f"{baseline}'s guided runs stand by the scale each chose on its held-out episodes. NFE per action: "
             "network evaluations a run recorded per action. "
             + (f"Actions/s: from the quiet acting benchmark {speed_path} (batch 10, one thread), the ratio to "
                f"{baseline}'s from that same run. " if speed is not None else "")
             + "Core-minutes: the median run's training stages' wall time times its threads (shared stages "
             "counted in every run that uses them, as a user running it alone would pay). Curve: the learning "
             "curve's last two points on its own episodes (means over seeds; the final evaluation's episodes are others) "
             "and whether it had "
             "flattened (their change within the seeds' spread there, or under 1 point), per scale for a guided "
             "run.", ""]
    data = data_references(store.table("runs"), list(spec.datasets)).set_index("dataset")
    for dataset, part in (rows.groupby("dataset", sort=False) if not rows.empty else ()):
        lines += [f"## {dataset}", ""]
        if dataset in data.index:  # the level imitation of the data reaches, beside the rows (never a row itself)
            lines += [f"The data's own score: {data.loc[dataset, 'score']:.1f} ({data.loc[dataset, 'how']}).", ""]
        lines += [markdown_table(part.drop(columns=["dataset"])), ""]
    if rows.empty:
        lines += [NONE_FOUND.format(spec=spec_path, store=store.path.parent), ""]
    short = sorted(set(short_of_competence(mine).values()))
    if short:
        lines += ["## Short of competence (†)", "", "A method is compared only once trained to competence; these rows "
                  "are shown for the record, and the leaderboard ranks them nowhere.", "", *(f"- {n}" for n in short), ""]
    if notes:
        lines += ["## Missing", "", *(f"- {n}" for n in notes), ""]
    out.write_text("\n".join(lines))
    return rows
