"""Can each algorithm's critic learn what the data's own policy is worth? Fitted-Q evaluation of the behaviour
policy with every algorithm's critic, as that algorithm builds and trains it, followed along training against
the data's Monte-Carlo returns (`diffbench critics`, results/critics.md).

For each algorithm with a critic (`Algorithm.critic_spec`), dataset and seed: SARSA on the data
(`policies.core.fqe`) for a budget of steps, read at evenly spaced steps by the critic check
(`policies.core.critics.critic_check`: Q on dataset actions beside the data's discounted returns in the family's
convention, their correlation, and the range the rewards allow). A critic that cannot evaluate the behaviour
policy cannot rank the actions that improve on it; one that can, but whose algorithm still loses to BC, points
at the policy's improvement step or at the data.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from envs import catalog
from envs.families import CONTINUING_FAMILIES, family
from policies import registry
from policies.core.critics import CriticProbe
from policies.core.fqe import fit_fqe
from policies.core.training import make_generator
from bench.reports.render import claims_table, critic_frame, fmt, markdown_table, study_page, write_page

ALGORITHMS = ("td3bc", "iql", "diffusion_ql", "idql", "sfbc", "qgpo")
# SfBC's critic is a regression onto returns, not a TD critic: its round 0 is the Monte-Carlo evaluation of the
# behaviour policy itself, so it has no fitted-Q row; its runs' own checks (`store_rows`) stand beside the others'.
DATASETS = ("diffbench/hopper/medium-small-v0", "diffbench/walker2d/medium-small-v0")


def fqe_rows(algorithm: str, dataset: str, seed: int, steps: int, preset: str = "cpu", checks: int = 10,
             on_row: Callable[[dict], None] | None = None) -> list[dict[str, Any]]:
    """One row per check of the algorithm's critic, trained by SARSA on `dataset` (with the family's reward
    transform, as the algorithm's runs train) with `seed`."""
    ds = catalog.load_dataset(dataset, reward_transform=catalog.default_reward_transform(dataset))
    config = registry.make_config(algorithm, preset, {"device": "cpu", "seed": seed})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        spec = registry.get(algorithm).for_dataset(ds, config).critic_spec()
    if spec is None:
        return []
    t = ds.transitions
    probe = CriticProbe(t, spec.gamma, seed=seed, continuing=family(dataset) in CONTINUING_FAMILIES)
    rows: list[dict[str, Any]] = []
    began = time.perf_counter()

    def check(step: int, q: Callable) -> None:
        c = probe.check(q)
        rows.append({"algorithm": algorithm, "dataset": dataset, "seed": seed, "step": step,
                     "q_data_mean": c["q_data_mean"], "mc_return_mean": c["mc_return_mean"],
                     "mc_correlation": c["mc_correlation"], "low": c["value_bounds"][0], "high": c["value_bounds"][1],
                     "outside": c["outside_bounds"], "seconds": time.perf_counter() - began, "returns": c["returns"]})
        if on_row is not None:
            on_row(rows[-1])

    q, _ = fit_fqe(spec, t, steps, make_generator(seed, torch.device("cpu")), checks, check)
    check(steps, q)
    return rows


KEY = ["algorithm", "dataset", "seed", "budget", "preset"]


def read_rows(path: Path | None) -> pd.DataFrame:
    """The study's stored rows (`--rows`), or none."""
    if path is None or not Path(path).exists():
        return pd.DataFrame(columns=[*KEY, "step"])
    try:
        rows = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not the critics study's CSV ({e}); move it aside and run again") from None
    missing = [c for c in [*KEY, "step"] if c not in rows.columns]
    if missing:
        raise ValueError(f"{path} lacks the columns {missing}; it was not written by `diffbench critics`")
    return rows


def study(algorithms: Sequence[str], datasets: Sequence[str], seeds: Sequence[int], steps: int, preset: str = "cpu",
          on_row: Callable[[dict], None] | None = None, rows_path: Path | None = None, run: bool = True,
          code: str = "") -> pd.DataFrame:
    """The rows of every (algorithm, dataset, seed) at this budget and preset. With `rows_path`, fits already stored
    there are read back instead of made again, and each new fit is added to it as soon as it ends, so an interrupted
    study resumes; `run=False` only reads."""
    stored = read_rows(rows_path)
    wanted = [(a, d, s) for a in algorithms for d in datasets for s in seeds]
    for a, d, s in wanted if run else []:
        mine = stored[(stored["algorithm"] == a) & (stored["dataset"] == d) & (stored["seed"] == s)
                      & (stored["budget"] == steps) & (stored["preset"] == preset)]
        if (mine["step"] == steps).any():
            continue
        new = pd.DataFrame(fqe_rows(a, d, s, steps, preset, on_row=on_row)).assign(budget=steps, preset=preset,
                                                                                 code=code)
        stored = pd.concat([stored.drop(mine.index), new], ignore_index=True) if len(new) else stored
        if rows_path is not None and len(new):
            Path(rows_path).parent.mkdir(parents=True, exist_ok=True)
            partial = Path(f"{rows_path}.partial")
            stored.to_csv(partial, index=False)
            partial.replace(rows_path)  # never a half-written file in place of the stored rows
    keep = (stored["algorithm"].isin(algorithms) & stored["dataset"].isin(datasets) & stored["seed"].isin(seeds)
            & (stored["budget"] == steps) & (stored["preset"] == preset))
    return stored[keep].reset_index(drop=True)


def store_rows(store: Any, preset: str, scratch: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the claims, the runs' critic checks) of a results store's runs at `preset`'s own budget, from one copy of
    them and one report."""
    from bench.reports import report as reports
    from bench.studies import competence

    at = competence.at_preset(store, preset, scratch)
    report = reports.build(at)
    if report.empty:
        return pd.DataFrame(columns=["check", "dataset", "figure", "holds"]), pd.DataFrame()
    return score_rows(report, at.table("runs")), report.critic


def score_rows(report: Any, runs: pd.DataFrame) -> pd.DataFrame:
    """The claims issue 40 makes of each critic's algorithm, from the report of a store's runs at the preset's own
    budget (`runs`: their rows): at or above MLP BC's 95% interval (the competence checks' criterion), and for
    QGPO s = 1 against its own s = 0, paired over seeds, with Q_0 in range. (The report's critic table is the
    critic check each run recorded at its end: the critic its algorithm acted with, in the FQE rows' convention.)"""
    from bench.studies import competence

    per = report.per_dataset
    rows = []
    for dataset in sorted(per["dataset"].unique()):
        present = set(per.loc[per["dataset"] == dataset, "algorithm"])
        if "bc" not in present:
            continue
        before = len(rows)
        for algorithm in (a for a in ALGORITHMS if a in present):
            scale = 1.0 if algorithm == "qgpo" else None
            label = f"{algorithm}{'' if scale is None else ' s = 1'} within MLP BC's 95% interval or above"
            rows.append(competence.at_least_bc(per, dataset, algorithm, scale, label))
            if algorithm == "qgpo" and family(dataset) == "locomotion":
                rows += competence.guidance_rows(report.scores, runs, dataset)
        if len(rows) > before and dataset in set(report.data_reference.get("dataset", [])):
            data = report.data_reference.set_index("dataset")["score"][dataset]
            rows.append({"check": "the data's own score (reference)", "dataset": dataset,
                         "figure": f"{fmt(data)}", "holds": None})
    return pd.DataFrame(rows, columns=["check", "dataset", "figure", "holds"])


def write(df: pd.DataFrame, out: Path, command: str, code: str, hardware: str, preset: str,
          scores: dict[str, pd.DataFrame] | None = None, notes: list[str] | None = None,
          variants: dict[str, pd.DataFrame] | None = None, checks: dict[str, pd.DataFrame] | None = None) -> Path:
    lines = study_page("Critics on the locomotion data: what each critic learns of the behaviour policy, and what "
                       "its algorithm scores beside BC", command, code, hardware,
                       f"Each algorithm's critic as it builds and trains it at the `{preset}` preset (network, state "
             "normalisation, learning rate, batch, target rate, discount; rewards with the dataset family's transform), "
             "trained by SARSA on the data (the next action the data took) and read along training: Q on dataset "
             "actions against the data's discounted returns, in the family's convention (locomotion: episodes, "
             "rows at least 459 steps before a time limit), and their correlation. Means over seeds, with the "
             "seeds' range of the correlation. Fitted-Q evaluation of the behaviour policy asks whether a critic "
             "can learn what the data's own policy is worth; the scores ask whether its algorithm turns that into "
             "a policy better than BC.")
    for source, table in (scores or {}).items():
        lines += [f"## Scores beside MLP BC ({source}, runs at the `{preset}` preset)", "",
                  "Scores are D4RL-normalised, the last checkpoint, mean ± std over seeds; 'within' means the "
                  "algorithm's mean is at or above the lower end of BC's 95% bootstrap interval over seeds; QGPO's "
                  "s = 1 against s = 0 is the paired difference over seeds with its interval.", ""]
        lines += [claims_table(table) if len(table) else "No runs.", ""]
        inside = (checks or {}).get(source)
        if inside is not None and len(inside):
            lines += ["The critic each run acted with, read at its end by the same check as the fitted-Q rows below "
                      "(means over runs; SfBC's is its returns network in return units, after its last round of "
                      "in-sample planning):", "", markdown_table(critic_frame(inside)), ""]
        tried = (variants or {}).get(source)
        if tried is not None and len(tried):
            lines += ["Variants in the same store: runs whose settings differ from the preset's beyond its budget, "
                      "each named by what differs. They are evidence for what moves a score, not the preset's.", "",
                      claims_table(tried, unmeasured=""), ""]
    if df.empty:
        return write_page(out, lines, "No fitted-Q rows.")
    for (dataset, algorithm), g in df.groupby(["dataset", "algorithm"], sort=True):
        per = g.groupby("step").agg(q=("q_data_mean", "mean"), mc=("mc_return_mean", "mean"),
                                    corr=("mc_correlation", "mean"), lo=("mc_correlation", "min"),
                                    hi=("mc_correlation", "max"), outside=("outside", "sum"),
                                    seconds=("seconds", "mean"), seeds=("seed", "nunique")).reset_index()
        lines += [f"## Fitted-Q evaluation: {algorithm} on {dataset}", "", f"Returns over {g['returns'].iloc[0]}.", ""]
        lines.append(markdown_table(pd.DataFrame({
            "step": per["step"].map(lambda v: f"{v:,}"), "Q on data actions": per["q"].map(fmt),
            "data's discounted return": per["mc"].map(fmt),
            "correlation [seeds' range]": [f"{fmt(c, 2)} [{fmt(a, 2)}, {fmt(b, 2)}]" for c, a, b in
                                           zip(per["corr"], per["lo"], per["hi"])],
            "runs outside the range": per["outside"].astype(int), "seconds": per["seconds"].map(lambda v: fmt(v, 0)),
            "seeds": per["seeds"]})))
        lines.append("")
    final = df[df["step"] == df.groupby(["algorithm", "dataset"])["step"].transform("max")]
    summary = final.groupby(["algorithm", "dataset"])["mc_correlation"].agg(["mean", "min"]).reset_index()
    lines += ["## Fitted-Q evaluation at the end of the budget", "", markdown_table(pd.DataFrame({
        "algorithm": summary["algorithm"], "dataset": summary["dataset"],
        "correlation (mean over seeds)": summary["mean"].map(lambda v: fmt(v, 2)),
        "worst seed": summary["min"].map(lambda v: fmt(v, 2)),
        "at least 0.5": np.where(summary["mean"] >= 0.5, "yes", "no")})), ""]
    if notes:
        lines += ["## What was tried where a claim does not hold, and what the evidence says", "",
                  *(f"- {n}" for n in notes), ""]
    return write_page(out, lines)
