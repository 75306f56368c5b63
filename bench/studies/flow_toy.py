"""The flow-matching core's behaviour model against the toy bandits' exact behaviour: FQL's flow policy (the
official velocity MLP, linear path, Euler sampler) trained on each toy's samples, its distance to fresh exact
samples beside the distance between two exact samples of the same size (the noise floor).

Two distances per (task, seed): with FQL's own sampler (10 Euler steps, what its one-step policy is distilled
from), and with `fine_steps` Euler steps, which measures the trained field without the coarse solver's error.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.harness.provenance import code_version, made_by
from bench.studies.exactness import _torch_gen, budget_label, stream
from bench.studies.resumable import run_resumable
from envs.toy import TASKS, noise_floor, sliced_wasserstein
from policies.core.diffusion import fit_behaviour
from policies.core.flow import FlowModel
from policies.core.networks import VectorField


@dataclass(frozen=True)
class FlowBudget:
    data: int = 100_000
    hidden: int = 256
    layers: int = 3
    steps: int = 6000
    batch: int = 1024
    lr: float = 1e-3  # decays by a cosine to 0 over the steps
    flow_steps: int = 10  # FQL's sampler
    fine_steps: int = 50
    n_eval: int = 5000  # the size of results/toy_noise_floor.md
    floor_repeats: int = 5  # as results/toy_noise_floor.md: with 2, the floor of n = 2000 moved by 2x between draws


BUDGETS = {"default": FlowBudget(),
           "test": FlowBudget(data=20_000, hidden=64, steps=800, batch=256, n_eval=2000, floor_repeats=8)}


def fit_flow(task: str, seed: int, budget: FlowBudget) -> FlowModel:
    """A velocity field trained by the flow-matching loss on `budget.data` samples of the toy's behaviour."""
    x = torch.as_tensor(TASKS[task].sample(budget.data, np.random.default_rng(stream(seed, task, "data"))),
                        dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream(seed, task, "init"))
        model = FlowModel(VectorField(2, 0, budget.hidden, budget.layers), 2)
    fit_behaviour(model, torch.zeros(len(x), 0), x, steps=budget.steps, batch=budget.batch, lr=budget.lr,
                  generator=_torch_gen(seed, task, "train"), lr_schedule="cosine")
    model.eval()
    return model


@torch.no_grad()
def flow_distances(task: str, model: FlowModel, budget: FlowBudget, seed: int) -> dict[str, float]:
    """SWD of the flow's samples (FQL's sampler and the fine one) to fresh exact samples, and the floor."""
    toy, n = TASKS[task], budget.n_eval
    fresh = toy.sample(n, np.random.default_rng(stream(seed, task, "fresh")))
    none = torch.zeros(n, 0)
    coarse = model.sample(none, budget.flow_steps, generator=_torch_gen(seed, task, "eval")).numpy()
    fine = model.sample(none, budget.fine_steps, generator=_torch_gen(seed, task, "eval")).numpy()
    floor = noise_floor(toy, 0.0, n, budget.floor_repeats, stream(seed, task, "floor"), mmd=False)["swd_floor_mean"]
    return {"task": task, "seed": seed, "swd_flow": sliced_wasserstein(coarse, fresh),
            "swd_fine": sliced_wasserstein(fine, fresh), "swd_floor": floor}


def job(task: str, seed: int, budget: FlowBudget) -> list[dict]:
    began = time.perf_counter()
    row = flow_distances(task, fit_flow(task, seed, budget), budget, seed)
    return [row | {"seconds": time.perf_counter() - began}]


def summary(rows: pd.DataFrame, budget: FlowBudget) -> pd.DataFrame:
    """Per task: the distances' mean and std over seeds, their ratio to the floor, and the 2x verdicts."""
    out = []
    for task, grp in rows.groupby("task", sort=False):
        floor = grp.swd_floor.mean()
        out.append({"task": task, "seeds": len(grp), "swd_flow": grp.swd_flow.mean(), "swd_flow_std": grp.swd_flow.std(),
                    "swd_fine": grp.swd_fine.mean(), "swd_fine_std": grp.swd_fine.std(), "swd_floor": floor,
                    "ratio_flow": grp.swd_flow.mean() / floor, "ratio_fine": grp.swd_fine.mean() / floor})
    return pd.DataFrame(out)


def report_lines(table: pd.DataFrame, budget: FlowBudget) -> list[str]:
    lines = [f"| task | seeds | SWD, {budget.flow_steps} Euler steps (FQL's) | ÷ floor | SWD, {budget.fine_steps} steps "
             "| ÷ floor | floor |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in table.itertuples():
        lines.append(f"| {r.task} | {r.seeds} | {r.swd_flow:.3f} ± {r.swd_flow_std:.3f} | {r.ratio_flow:.2f} | "
                     f"{r.swd_fine:.3f} ± {r.swd_fine_std:.3f} | {r.ratio_fine:.2f} | {r.swd_floor:.3f} |")
    within = [r.task for r in table.itertuples() if r.ratio_flow <= 2]
    within_fine = [r.task for r in table.itertuples() if r.ratio_fine <= 2]
    lines += ["", f"Within 2× the floor with FQL's 10-step sampler: {len(within)} of {len(table)} toys"
              f" ({', '.join(within) or 'none'}); with {budget.fine_steps} steps: {len(within_fine)} of {len(table)}"
              f" ({', '.join(within_fine) or 'none'})."]
    return lines


def run(tasks: list[str], seeds: list[int], budget_name: str, out: Path, command: str, workers: int = 1) -> pd.DataFrame:
    """(task, seed) jobs in `workers` single-threaded processes; resumable: finished jobs are kept in
    `<out>.partial.csv` (`bench.studies.resumable`), deleted once the report is written."""
    budget, version, began = BUDGETS[budget_name], code_version(), time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, _ = run_resumable(job, [(task, seed, budget) for task in tasks for seed in seeds], lambda j: (j[0], j[1]), out,
                            budget_label(budget_name, budget), workers, reuse=lambda grp: grp)
    df = pd.DataFrame(rows)
    df["task"] = pd.Categorical(df.task, tasks, ordered=True)
    df = df.sort_values(["task", "seed"]).reset_index(drop=True)
    df.to_csv(out.with_suffix(".csv"), index=False, float_format="%.5g")
    table = summary(df, budget)
    text = ["# The flow-matching behaviour model against the toys' exact behaviour", "",
            made_by(command, time.perf_counter() - began, version), "",
            "FQL's flow policy (velocity MLP on [x, t], linear path, Euler sampler; `policies.core.flow`) trained by "
            f"flow matching on each toy's samples, then sampled n = {budget.n_eval} times; SWD to {budget.n_eval} fresh "
            "exact samples of the toy, mean ± std over seeds; the floor is two exact samples' SWD (averaged over "
            f"{budget.floor_repeats} draws). Budget: "
            + ", ".join(f"{k} {v}" for k, v in asdict(budget).items()) + ".", "", *report_lines(table, budget)]
    out.write_text("\n".join(text) + "\n")
    out.with_suffix(".partial.csv").unlink(missing_ok=True)
    return table
