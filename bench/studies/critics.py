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
from policies.core.critics import critic_check, mc_probe
from policies.core.fqe import fit_fqe
from policies.core.training import make_generator

ALGORITHMS = ("td3bc", "iql", "diffusion_ql", "idql", "qgpo")
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
    drawn = mc_probe(t, spec.gamma, seed=seed, continuing=family(dataset) in CONTINUING_FAMILIES)
    rows: list[dict[str, Any]] = []
    began = time.perf_counter()

    def check(step: int, q: Callable) -> None:
        c = critic_check(q, t, spec.gamma, seed=seed, drawn=drawn)
        rows.append({"algorithm": algorithm, "dataset": dataset, "seed": seed, "step": step,
                     "q_data_mean": c["q_data_mean"], "mc_return_mean": c["mc_return_mean"],
                     "mc_correlation": c["mc_correlation"], "low": c["value_bounds"][0], "high": c["value_bounds"][1],
                     "outside": c["outside_bounds"], "seconds": time.perf_counter() - began, "returns": c["returns"]})
        if on_row is not None:
            on_row(rows[-1])

    q, _ = fit_fqe(spec, t, steps, make_generator(seed, torch.device("cpu")), checks, check)
    check(steps, q)
    return rows


def study(algorithms: Sequence[str], datasets: Sequence[str], seeds: Sequence[int], steps: int, preset: str = "cpu",
          on_row: Callable[[dict], None] | None = None) -> pd.DataFrame:
    rows = [r for a in algorithms for d in datasets for s in seeds for r in fqe_rows(a, d, s, steps, preset,
                                                                                     on_row=on_row)]
    return pd.DataFrame(rows)


def write(df: pd.DataFrame, out: Path, command: str, code: str, hardware: str, preset: str) -> Path:
    from bench.reports.render import fmt, markdown_table, study_page, write_page

    lines = study_page("Fitted-Q evaluation of the behaviour policy with each algorithm's critic", command, code, hardware,
                       f"Each algorithm's critic as it builds and trains it at the `{preset}` preset (network, state "
             "normalisation, learning rate, batch, target rate, discount; rewards with the dataset family's transform), "
             "trained by SARSA on the data (the next action the data took) and read along training: Q on dataset "
             "actions against the data's discounted returns, in the family's convention (locomotion: episodes, "
             "rows at least 459 steps before a time limit), and their correlation. Means over seeds, with the "
             "seeds' range of the correlation.")
    if df.empty:
        return write_page(out, lines, "No rows.")
    for (dataset, algorithm), g in df.groupby(["dataset", "algorithm"], sort=True):
        per = g.groupby("step").agg(q=("q_data_mean", "mean"), mc=("mc_return_mean", "mean"),
                                    corr=("mc_correlation", "mean"), lo=("mc_correlation", "min"),
                                    hi=("mc_correlation", "max"), outside=("outside", "sum"),
                                    seconds=("seconds", "mean"), seeds=("seed", "nunique")).reset_index()
        lines += [f"## {algorithm} on {dataset}", "", f"Returns over {g['returns'].iloc[0]}.", ""]
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
    lines += ["## At the end of the budget", "", markdown_table(pd.DataFrame({
        "algorithm": summary["algorithm"], "dataset": summary["dataset"],
        "correlation (mean over seeds)": summary["mean"].map(lambda v: fmt(v, 2)),
        "worst seed": summary["min"].map(lambda v: fmt(v, 2)),
        "at least 0.5": np.where(summary["mean"] >= 0.5, "yes", "no")})), ""]
    return write_page(out, lines)
