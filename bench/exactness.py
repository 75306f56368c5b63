"""Is CEP guidance exact? Guided samples against exact target samples on the toy bandits.

For each task and seed: fit the behaviour model mu_theta on behaviour samples, draw M support
samples per contrastive group from it, and use the task's exact Q as Q_0. For each beta, fit the
intermediate energy f_phi by CEP and by MSE, sample pi(x) ∝ mu_theta(x) exp(beta Q(x)) with
guidance scale 1 (DPM-Solver-2, 15 steps), and measure SWD and MMD to exact target samples
(rejection sampling, `envs.toy.sample_target`). The behaviour model's own distance to fresh
behaviour samples is reported for scale: guided samples cannot beat the model they guide.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.provenance import code_version, made_by
from envs.toy import TASKS, mmd_rbf, sample_target, sliced_wasserstein
from policies.diffusion import DiffusionModel, fit_behaviour
from policies.networks import EnergyNet
from policies.qgpo import generate_support, train_energy
from policies.samplers import SamplerSpec
from policies.training import make_generator


@dataclass(frozen=True)
class ExactnessBudget:
    data: int = 100_000  # behaviour samples (the offline dataset)
    widths: tuple[int, ...] = (128, 64, 32)
    behaviour_steps: int = 2500
    behaviour_batch: int = 512
    behaviour_lr: float = 1e-3
    groups: int = 4096  # contrastive groups of support samples drawn from mu_theta
    m: int = 32  # support samples per group
    energy_hidden: int = 128
    energy_layers: int = 4
    energy_steps: int = 1200
    energy_batch: int = 32  # groups per CEP step; MSE steps use energy_batch * m samples
    energy_lr: float = 1e-3
    n_eval: int = 5000  # samples compared, the size of results/toy_noise_floor.md


BUDGETS = {"default": ExactnessBudget(),
           "test": ExactnessBudget(data=20_000, widths=(64, 32, 16), behaviour_steps=600, groups=512, m=16,
                                   energy_hidden=64, energy_steps=300, n_eval=2000)}


def run_task(task: str, betas: list[float], seed: int, budget: ExactnessBudget, methods=("cep", "mse"),
             progress: bool = False) -> list[dict]:
    """Rows of (task, beta, method, seed) -> distances; method 'behaviour' is mu_theta vs mu."""
    toy = TASKS[task]
    rng = np.random.default_rng(seed)
    gen = make_generator(seed, torch.device("cpu"))
    x = torch.as_tensor(toy.sample(budget.data, rng), dtype=torch.float32)
    none = torch.zeros(budget.data, 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DiffusionModel(2, 0, budget.widths)
    t0 = time.perf_counter()
    fit_behaviour(model, none, x, steps=budget.behaviour_steps, batch=budget.behaviour_batch, lr=budget.behaviour_lr,
                  generator=gen, progress=progress)
    model.eval()
    sampler = SamplerSpec()
    fresh = toy.sample(budget.n_eval, rng)
    mu_theta = model.sample(torch.zeros(budget.n_eval, 0), 1, sampler, generator=gen).x[:, 0]
    rows = [{"task": task, "beta": 0.0, "method": "behaviour", "seed": seed,
             "swd": sliced_wasserstein(mu_theta, fresh, seed=seed), "mmd": mmd_rbf(mu_theta, fresh),
             "seconds": time.perf_counter() - t0}]
    support = generate_support(model, torch.zeros(budget.groups, 0), budget.m, sampler, 65_536, gen)
    support_q = torch.as_tensor(toy.q(support.reshape(-1, 2).double().numpy()), dtype=torch.float32).reshape(budget.groups, budget.m)
    data_q = torch.as_tensor(toy.q(x.double().numpy()), dtype=torch.float32)
    for beta in betas:
        target, _ = sample_target(toy, beta, budget.n_eval, np.random.default_rng([seed, int(beta * 1000)]))
        for method in methods:
            t0 = time.perf_counter()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                energy = EnergyNet(2, 0, budget.energy_hidden, budget.energy_layers)
            if method == "cep":
                train_energy(energy, model.schedule, torch.zeros(budget.groups, 0), loss="cep", beta=beta,
                             steps=budget.energy_steps, batch=budget.energy_batch, lr=budget.energy_lr, generator=gen,
                             support=support, support_q=support_q, progress=progress)
            else:
                train_energy(energy, model.schedule, none, loss="mse", beta=beta, steps=budget.energy_steps,
                             batch=budget.energy_batch * budget.m, lr=budget.energy_lr, generator=gen,
                             actions=x, actions_q=data_q, progress=progress)
            guided = model.sample(torch.zeros(budget.n_eval, 0), 1, sampler, energy, 1.0, gen).x[:, 0]
            rows.append({"task": task, "beta": beta, "method": method, "seed": seed,
                         "swd": sliced_wasserstein(guided, target, seed=seed), "mmd": mmd_rbf(guided, target),
                         "seconds": time.perf_counter() - t0})
    return rows


def summarise(raw: pd.DataFrame, floor: pd.DataFrame | None) -> pd.DataFrame:
    g = raw.groupby(["task", "beta", "method"], sort=False)
    out = g.agg(swd_mean=("swd", "mean"), swd_std=("swd", "std"), mmd_mean=("mmd", "mean"),
                mmd_std=("mmd", "std"), seeds=("seed", "nunique")).reset_index()
    if floor is not None:
        out = out.merge(floor[["task", "beta", "swd_floor_mean", "mmd_floor_mean", "swd_behaviour_mean"]],
                        on=["task", "beta"], how="left")
    return out


def write_report(summary: pd.DataFrame, raw: pd.DataFrame, out: Path, command: str, budget: ExactnessBudget,
                 seconds: float, version: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    raw.to_csv(out.with_suffix(".csv"), index=False, float_format="%.5g")
    beh = summary[summary.method == "behaviour"].set_index("task")
    lines = [
        "# Exactness of energy guidance on the toy bandits",
        "",
        made_by(command, seconds, version),
        "",
        "Target π(x) ∝ μθ(x)·exp(β·Q(x)) with the task's exact Q as Q₀; guided sampling with scale 1, "
        "DPM-Solver-2 (singlestep), 15 steps. Distances to n = "
        f"{budget.n_eval} exact target samples (rejection sampling from the true μ), mean ± std over seeds.",
        "`floor`: two exact samples of the same size (results/toy_noise_floor.md); `μ→target`: ignoring guidance. "
        "`μθ error` is the behaviour model's SWD to fresh behaviour samples: guidance cannot remove it.",
        "",
        "Budget: " + ", ".join(f"{k} {v}" for k, v in asdict(budget).items()) + ".",
        "",
        "| task | β | SWD CEP | SWD MSE | SWD floor | μθ error | SWD μ→target | MMD CEP | MMD MSE | MMD floor |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    guided = summary[summary.method != "behaviour"]
    for (task, beta), grp in guided.groupby(["task", "beta"], sort=False):
        r = {m.method: m for m in grp.itertuples()}
        cep, mse = r.get("cep"), r.get("mse")
        fmt = lambda row, k: f"{getattr(row, k + '_mean'):.3f} ± {getattr(row, k + '_std'):.3f}" if row is not None else "–"  # noqa: E731
        floor_row = cep if cep is not None else mse
        lines.append(
            f"| {task} | {beta:g} | {fmt(cep, 'swd')} | {fmt(mse, 'swd')} | {getattr(floor_row, 'swd_floor_mean', float('nan')):.3f} | "
            f"{beh.loc[task, 'swd_mean']:.3f} | {getattr(floor_row, 'swd_behaviour_mean', float('nan')):.3f} | "
            f"{fmt(cep, 'mmd')} | {fmt(mse, 'mmd')} | {getattr(floor_row, 'mmd_floor_mean', float('nan')):.3f} |")
    lines += ["", headline(summary)]
    out.write_text("\n".join(lines) + "\n")


def headline(summary: pd.DataFrame) -> str:
    piv = summary[summary.method.isin(["cep", "mse"])].pivot_table(index=["task", "beta"], columns="method", values="swd_mean")
    wins = int((piv["cep"] < piv["mse"]).sum())
    by_beta = piv.groupby(level="beta").mean()
    parts = [f"β={b:g}: CEP {r.cep:.3f} vs MSE {r.mse:.3f}" for b, r in by_beta.iterrows()]
    return (f"**Headline:** CEP has the lower SWD in {wins} of {len(piv)} task×β cells. "
            f"Mean SWD over tasks, {'; '.join(parts)}.")


def _job(args: tuple) -> list[dict]:
    task, betas, seed, budget, threads = args
    if threads:
        torch.set_num_threads(threads)
    return run_task(task, betas, seed, budget)


def _finished(partial: Path, budget_name: str, betas: list[float]) -> pd.DataFrame:
    """Rows of (task, seed) jobs an interrupted run already finished with the same budget and betas."""
    if not partial.exists():
        return pd.DataFrame()
    done = pd.read_csv(partial)
    done = done[done.budget == budget_name]
    keep = [key for key, grp in done.groupby(["task", "seed"])
            if set(betas) <= set(grp.loc[grp.method != "behaviour", "beta"])]
    mask = done.set_index(["task", "seed"]).index.isin(keep)
    return done[mask & (done.beta.isin(betas) | (done.method == "behaviour"))]


def run(tasks: list[str], betas: list[float], seeds: list[int], budget_name: str, out: Path, command: str,
        floor_csv: Path | None, workers: int = 1) -> pd.DataFrame:
    """With workers > 1, (task, seed) jobs run in that many single-threaded processes.

    Each finished job is appended to `<out>.partial.csv`, so an interrupted run, started again with
    the same arguments, redoes only the jobs that had not finished.
    """
    version, start = code_version(), time.perf_counter()
    budget = BUDGETS[budget_name]
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial.csv")
    previous = _finished(partial, budget_name, betas)
    done = set(zip(previous.get("task", []), previous.get("seed", [])))
    rows = previous.to_dict("records")
    jobs = [(task, betas, seed, budget, 1 if workers > 1 else 0)
            for task in tasks for seed in seeds if (task, seed) not in done]
    if done:
        print(f"{len(done)} jobs already finished in {partial}; running the other {len(jobs)}", flush=True)

    def finished(job: tuple, result: list[dict]) -> None:
        for r in result:
            r["budget"] = budget_name
        rows.extend(result)
        pd.DataFrame(result).to_csv(partial, mode="a", header=not partial.exists(), index=False)
        print(f"{job[0]} seed {job[2]}: done ({time.perf_counter() - start:.0f} s)", flush=True)

    if workers > 1:
        ctx = multiprocessing.get_context("spawn")  # fork after OpenMP started can deadlock
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            futures = {pool.submit(_job, job): job for job in jobs}
            for future in as_completed(futures):
                finished(futures[future], future.result())
    else:
        for job in jobs:
            finished(job, _job(job))
    raw = pd.DataFrame(rows).drop(columns="budget")
    order = {task: i for i, task in enumerate(tasks)}
    raw = raw.sort_values(["task", "seed"], key=lambda c: c.map(order) if c.name == "task" else c, kind="stable")
    floor = pd.read_csv(floor_csv) if floor_csv is not None and floor_csv.exists() else None
    summary = summarise(raw, floor)
    write_report(summary, raw, out, command, budget, time.perf_counter() - start, version)
    partial.unlink(missing_ok=True)
    return summary
