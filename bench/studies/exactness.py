"""Is CEP guidance exact? Guided samples against exact target samples on the toy bandits.

For each task and seed: fit the behaviour model mu_theta on behaviour samples, draw M support
samples per contrastive group from it, and use the task's exact Q as Q_0. For each beta, fit the
intermediate energy f_phi by CEP and by MSE regression (its learning rate chosen by its own final
loss), sample with guidance scale 1 (DPM-Solver-2, 15 steps), and measure SWD and MMD to two exact
targets, both drawn by rejection (`envs.toy.tilt`):
- the tilt of mu_theta, p ∝ mu_theta exp(beta Q): what guidance of this model should reach, so the
  distance isolates the guidance's own error;
- the tilt of the true mu, p ∝ mu exp(beta Q): the end-to-end error, behaviour model included.
The behaviour model's own distance to fresh behaviour samples is measured with QGPO's 15-step
solver and with a fine one, which separates the model's error from the solver's.

Every random draw (data, model initialisation, support samples, each method's training and sampling,
each target) comes from its own stream, derived from (seed, task, purpose), so one method's draws
never shift another's.
"""

from __future__ import annotations

import copy
import math
import multiprocessing
import time
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.harness.provenance import budget_label, code_version, made_by
from envs.toy import TASKS, mmd_rbf, sample_target, sliced_wasserstein, tilt
from policies.core.diffusion import DiffusionModel, fit_behaviour
from policies.core.networks import EnergyNet, TwinQ
from policies.algorithms.qgpo import generate_support, train_energy
from policies.core.samplers import SamplerSpec
from policies.core.training import make_generator, optimiser_step

METHODS = ("cep", "mse")
T_95 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}  # t(0.975, n-1)


@dataclass(frozen=True)
class ExactnessBudget:
    data: int = 100_000  # behaviour samples (the offline dataset)
    widths: tuple[int, ...] = (128, 64, 32)
    behaviour_steps: int = 3000
    behaviour_batch: int = 1024
    behaviour_lr: float = 1e-3
    behaviour_settle_steps: int = 1000  # a last phase at a tenth of the rate, which settles the model
    groups: int = 4096  # contrastive groups of support samples drawn from mu_theta
    m: int = 32  # support samples per group
    energy_hidden: int = 128
    energy_layers: int = 4
    energy_steps: int = 1200
    energy_batch: int = 32  # groups per CEP step; MSE steps use energy_batch * m samples
    energy_lr: float = 1e-3
    mse_lrs: tuple[float, ...] = (1e-3, 3e-4)  # MSE's rate, chosen by its own final loss (never by the target)
    n_eval: int = 5000  # samples compared, the size of results/toy_noise_floor.md
    fine_steps: int = 60  # solver steps that measure mu_theta without the 15-step solver's error
    pool_draws: int = 4_000_000  # mu_theta samples at most when drawing its tilt
    tilt_batch: int = 200_000  # mu_theta samples per rejection round of its tilt (the targets' stream depends on it)


BUDGETS = {"default": ExactnessBudget(),
           "test": ExactnessBudget(data=20_000, widths=(64, 32, 16), behaviour_steps=600, behaviour_batch=512,
                                   behaviour_settle_steps=0, groups=512, m=16, energy_hidden=64, energy_steps=300,
                                   mse_lrs=(1e-3,), n_eval=2000, fine_steps=30, pool_draws=1_000_000,
                                   tilt_batch=20_000)}


def stream(seed: int, *purpose: str) -> int:
    """A seed of its own for each (seed, purpose...): independent streams per task, method, beta and draw."""
    return int(np.random.SeedSequence([seed, *(zlib.crc32(p.encode()) for p in purpose)]).generate_state(1)[0])


def _torch_gen(seed: int, *purpose: str) -> torch.Generator:
    return make_generator(stream(seed, *purpose), torch.device("cpu"))


def _distances(x: torch.Tensor | np.ndarray, target: np.ndarray, seed: int) -> tuple[float, float]:
    return sliced_wasserstein(x, target, seed=seed), mmd_rbf(x, target)


_FITTED: dict[tuple[str, int, ExactnessBudget], tuple[torch.Tensor, DiffusionModel]] = {}


def fit_toy_behaviour(task: str, seed: int, budget: ExactnessBudget, progress: bool = False
                      ) -> tuple[torch.Tensor, DiffusionModel]:
    """The offline data of `task` and mu_theta fitted to it (the behaviour stage of every toy study).

    A pure function of its arguments, so it is fitted once per process: the studies (and their tests)
    that start from the same mu_theta share the fit; each caller gets its own copy to train on."""
    key = (task, seed, budget)
    if key not in _FITTED:
        _FITTED[key] = _fit_toy_behaviour(task, seed, budget, progress)
    x, model = _FITTED[key]
    return x.clone(), copy.deepcopy(model)


def _fit_toy_behaviour(task: str, seed: int, budget: ExactnessBudget, progress: bool) -> tuple[torch.Tensor, DiffusionModel]:
    toy = TASKS[task]
    x = torch.as_tensor(toy.sample(budget.data, np.random.default_rng(stream(seed, task, "data"))), dtype=torch.float32)
    none = torch.zeros(budget.data, 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream(seed, task, "init", "behaviour"))
        model = DiffusionModel(2, 0, budget.widths)
    gen = _torch_gen(seed, task, "train", "behaviour")
    fit_behaviour(model, none, x, steps=budget.behaviour_steps, batch=budget.behaviour_batch, lr=budget.behaviour_lr,
                  generator=gen, progress=progress)
    if budget.behaviour_settle_steps:
        fit_behaviour(model, none, x, steps=budget.behaviour_settle_steps, batch=budget.behaviour_batch,
                      lr=budget.behaviour_lr / 10, generator=gen, progress=progress)
    model.eval()
    return x, model


def fit_toy_q(x: torch.Tensor, task: str, seed: int, steps: int, hidden: int = 256, layers: int = 2,
              batch: int = 1024, lr: float = 1e-3) -> TwinQ:
    """Q_0 learned from the toy's data alone. A bandit's reward is Q of the data's action, so its Q-learning
    is a regression onto them (what QGPO's critic reduces to at one step). Off the data's support it
    extrapolates: what a fine-tuning method may exploit, and guidance within the support should not."""
    targets = torch.as_tensor(TASKS[task].q(x.double().numpy()), dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream(seed, task, "init", "q0"))
        net = TwinQ(2, 0, hidden, layers)
    gen = _torch_gen(seed, task, "train", "q0")
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    none = torch.zeros(batch, 0)
    for _ in range(steps):
        i = torch.randint(len(x), (batch,), generator=gen)
        optimiser_step(opt, net.regression_loss(none, x[i], targets[i]))
    return net.requires_grad_(False).eval()


def toy_support(model: DiffusionModel, task: str, seed: int, budget: ExactnessBudget) -> tuple[torch.Tensor, torch.Tensor]:
    """CEP's contrastive groups: M samples of mu_theta per group, and their exact Q."""
    support = generate_support(model, torch.zeros(budget.groups, 0), budget.m, SamplerSpec(), 65_536,
                               _torch_gen(seed, task, "support"))
    q = TASKS[task].q(support.reshape(-1, 2).double().numpy())
    return support, torch.as_tensor(q, dtype=torch.float32).reshape(budget.groups, budget.m)


def theta_tilt(sample_batch, task: str, beta: float, seed: int, budget: ExactnessBudget,
               purpose: str = "tilt") -> tuple[np.ndarray, float]:
    """Exact samples of the tilt of a model's samples (`sample_batch(k)` -> (k, 2)), by rejection in rounds of
    `budget.tilt_batch` draws."""
    return tilt(lambda k: sample_batch(k).double().numpy(), TASKS[task].q, beta, budget.n_eval,
                np.random.default_rng(stream(seed, task, purpose, f"beta={beta:g}")), batch=budget.tilt_batch,
                max_draws=budget.pool_draws, name="mu_theta")


def run_task(task: str, betas: list[float], seed: int, budget: ExactnessBudget, methods=METHODS,
             progress: bool = False) -> list[dict]:
    """Rows per (task, seed): 'behaviour' (mu_theta vs mu), then per beta and method the distances to both
    targets, the final training loss and the share of samples outside the data's range."""
    toy = TASKS[task]
    t0 = time.perf_counter()
    x, model = fit_toy_behaviour(task, seed, budget, progress)
    none = torch.zeros(budget.data, 0)
    lo, hi = x.min(0).values, x.max(0).values
    sampler, fine = SamplerSpec(), SamplerSpec(steps=budget.fine_steps)
    fresh = toy.sample(budget.n_eval, np.random.default_rng(stream(seed, task, "fresh")))
    eval_gen = _torch_gen(seed, task, "sample", "behaviour")
    mu_theta = model.sample(torch.zeros(budget.n_eval, 0), 1, sampler, generator=eval_gen).x[:, 0]
    mu_fine = model.sample(torch.zeros(budget.n_eval, 0), 1, fine, generator=eval_gen).x[:, 0]
    base = {"task": task, "seed": seed}
    swd, mmd = _distances(mu_theta, fresh, seed)
    rows = [base | {"beta": 0.0, "method": "behaviour", "swd_mu": swd, "mmd_mu": mmd,
                    "swd_fine": sliced_wasserstein(mu_fine, fresh, seed=seed), "seconds": time.perf_counter() - t0}]
    support, support_q = toy_support(model, task, seed, budget)
    data_q = torch.as_tensor(toy.q(x.double().numpy()), dtype=torch.float32)
    pool_gen = _torch_gen(seed, task, "pool")

    def mu_theta_batch(k: int) -> torch.Tensor:
        return model.sample(torch.zeros(k, 0), 1, sampler, generator=pool_gen).x[:, 0]

    for beta in betas:
        key = f"beta={beta:g}"
        target_mu, _ = sample_target(toy, beta, budget.n_eval, np.random.default_rng(stream(seed, task, "target", key)))
        target_theta, rate = theta_tilt(mu_theta_batch, task, beta, seed, budget)
        for method in methods:
            t0 = time.perf_counter()
            energy, loss, lr = _fit_energy(method, budget, model, x, none, support, support_q, data_q, beta, seed, task, key)
            guided = model.sample(torch.zeros(budget.n_eval, 0), 1, sampler, energy, 1.0,
                                  _torch_gen(seed, task, "sample", method, key)).x[:, 0]
            outside = ((guided < lo) | (guided > hi)).any(-1).float().mean().item()
            swd_mu, mmd_mu = _distances(guided, target_mu, seed)
            swd_th, mmd_th = _distances(guided, target_theta, seed)
            rows.append(base | {"beta": beta, "method": method, "swd_mu": swd_mu, "mmd_mu": mmd_mu, "swd_theta": swd_th,
                                "mmd_theta": mmd_th, "theta_target_n": len(target_theta), "theta_acceptance": rate,
                                "final_loss": loss, "lr": lr, "outside": outside, "seconds": time.perf_counter() - t0})
    return rows


def _fit_energy(method: str, budget: ExactnessBudget, model: DiffusionModel, x: torch.Tensor, none: torch.Tensor,
                support: torch.Tensor, support_q: torch.Tensor, data_q: torch.Tensor, beta: float, seed: int, task: str,
                key: str) -> tuple[EnergyNet, float, float]:
    """f_phi by CEP, or by MSE at each rate of `mse_lrs`, keeping the lowest final training loss."""
    best = None
    for lr in (budget.energy_lr,) if method == "cep" else budget.mse_lrs:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stream(seed, task, "init", method, key))
            energy = EnergyNet(2, 0, budget.energy_hidden, budget.energy_layers)
        gen = _torch_gen(seed, task, "train", method, key, f"lr={lr:g}")
        if method == "cep":
            record = train_energy(energy, model.schedule, torch.zeros(budget.groups, 0), loss="cep", beta=beta,
                                  steps=budget.energy_steps, batch=budget.energy_batch, lr=lr, generator=gen,
                                  support=support, support_q=support_q)
        else:
            record = train_energy(energy, model.schedule, none, loss="mse", beta=beta, steps=budget.energy_steps,
                                  batch=budget.energy_batch * budget.m, lr=lr, generator=gen, actions=x, actions_q=data_q)
        loss = float(record["final_loss"]) if record["final_loss"] is not None else math.inf
        if best is None or loss < best[1]:
            best = (energy, loss, lr)
    return best


def _interval(values: pd.Series) -> tuple[float, float, float]:
    """Mean and 95% t-interval over seeds."""
    v = values.dropna().to_numpy(dtype=float)
    if len(v) < 2:
        return (float(v.mean()) if len(v) else math.nan), math.nan, math.nan
    half = T_95.get(len(v), 1.96) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def _cell(r: pd.Series | None, col: str, digits: int = 3) -> str:
    """"mean ± std" of a summary row's `col` ("mean" alone for one seed; "–" when missing)."""
    if r is None or f"{col}_mean" not in r or pd.isna(r[f"{col}_mean"]):
        return "–"
    std = r.get(f"{col}_std", math.nan)
    return f"{r[f'{col}_mean']:.{digits}f}" + ("" if pd.isna(std) else f" ± {std:.{digits}f}")


def summarise(raw: pd.DataFrame, floor: pd.DataFrame | None) -> pd.DataFrame:
    rows = []
    for (task, beta, method), g in raw.groupby(["task", "beta", "method"], sort=False):
        row = {"task": task, "beta": beta, "method": method, "seeds": g["seed"].nunique()}
        for col in ("swd_mu", "mmd_mu", "swd_theta", "mmd_theta", "swd_fine", "final_loss", "outside", "lr"):
            if col in g and g[col].notna().any():
                mean, low, high = _interval(g[col])
                row |= {f"{col}_mean": mean, f"{col}_std": float(g[col].std(ddof=1)) if len(g) > 1 else math.nan,
                        f"{col}_low": low, f"{col}_high": high}
        rows.append(row)
    out = pd.DataFrame(rows)
    if floor is not None:
        out = out.merge(floor[["task", "beta", "swd_floor_mean", "mmd_floor_mean", "swd_behaviour_mean"]],
                        on=["task", "beta"], how="left")
    return out


def verdict(cep: pd.Series | None, mse: pd.Series | None, col: str) -> str:
    """'CEP' or 'MSE' where one's 95% interval over seeds lies wholly below the other's, else 'tie'."""
    if cep is None or mse is None or any(math.isnan(v) for v in (cep[f"{col}_high"], mse[f"{col}_low"])):
        return "–"
    if cep[f"{col}_high"] < mse[f"{col}_low"]:
        return "CEP"
    if mse[f"{col}_high"] < cep[f"{col}_low"]:
        return "MSE"
    return "tie"


def write_report(summary: pd.DataFrame, raw: pd.DataFrame, out: Path, command: str, budget: ExactnessBudget,
                 seconds: float, version: str, floor: pd.DataFrame | None) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    raw.to_csv(out.with_suffix(".csv"), index=False, float_format="%.5g")
    f = (lambda r, k: "–" if r is None or f"{k}_mean" not in r or math.isnan(r[f"{k}_mean"])  # noqa: E731
         else f"{r[f'{k}_mean']:.3f} ± {r[f'{k}_std']:.3f}")
    seeds = int(summary["seeds"].max())
    lines = [
        "# Exactness of energy guidance on the toy bandits", "",
        made_by(command, seconds, version), "",
        f"Guided sampling with scale 1, DPM-Solver-2 (singlestep), 15 steps, the task's exact Q as Q₀, {seeds} seeds "
        f"(mean ± std over seeds). Distances are to n = {budget.n_eval} exact samples of two targets, both by rejection:",
        "- **tilt of μθ**, π ∝ μθ·exp(β·Q), μθ being the trained behaviour model sampled as guidance samples it: the "
        "distance measures the guidance alone;",
        "- **tilt of μ**, π ∝ μ·exp(β·Q), the true behaviour: the end-to-end distance, the behaviour model's error included.",
        "A win needs the two methods' 95% t-intervals over seeds not to overlap; otherwise the cell says `tie`. `floor`: two "
        "exact samples of the same size (results/toy_noise_floor.md). MSE's learning rate is picked from "
        f"{', '.join(f'{lr:g}' for lr in budget.mse_lrs)} by its own final training loss; `outside` is the share of guided "
        "samples outside the data's bounding box.", "",
        "Budget: " + ", ".join(f"{k} {v}" for k, v in asdict(budget).items()) + ".", "",
        "## The behaviour model", "",
        "| task | μθ SWD, 15 steps | μθ SWD, "
        f"{budget.fine_steps} steps | floor (β = 0) | within 2× floor at 15 steps |",
        "|---|---:|---:|---:|---|",
    ]
    beh = summary[summary.method == "behaviour"].set_index("task")
    floor0 = floor[floor.beta == 0].set_index("task")["swd_floor_mean"] if floor is not None else pd.Series(dtype=float)
    missing = []
    for task, r in beh.iterrows():
        fl = floor0.get(task, math.nan)
        ok = bool(r["swd_mu_mean"] <= 2 * fl) if not math.isnan(fl) else None
        fine_ok = bool(r["swd_fine_mean"] <= 2 * fl) if not math.isnan(fl) else None
        if ok is False:
            missing.append((task, fine_ok))
        lines.append(f"| {task} | {f(r, 'swd_mu')} | {f(r, 'swd_fine')} | {fl:.3f} | "
                     f"{'yes' if ok else 'no' if ok is False else '–'} |")
    if missing:
        solver = [t for t, fine_ok in missing if fine_ok]
        model = [t for t, fine_ok in missing if not fine_ok]
        lines += ["", "Not within 2× the floor: " + "; ".join(
            part for part in (f"{', '.join(solver)}: the 15-step solver (the same model sampled with "
                              f"{budget.fine_steps} steps is within 2×)" if solver else "",
                              f"{', '.join(model)}: the model at this budget (also with {budget.fine_steps} steps; "
                              "more steps or width would be needed, beyond this table's 2-core budget)" if model else "")
            if part) + ". The tilt-of-μθ columns are unaffected: they compare with the tilt of this very model."]
    lines += ["", "## Guided samples", "",
              "| task | β | SWD to tilt of μθ: CEP | MSE | win | SWD to tilt of μ: CEP | MSE | win | SWD floor | "
              "MMD to tilt of μθ: CEP | MSE | MMD floor | MSE lr | final loss CEP / MSE | outside CEP / MSE |",
              "|---|---:|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    guided = summary[summary.method != "behaviour"]
    for (task, beta), grp in guided.groupby(["task", "beta"], sort=False):
        r = {row["method"]: row for _, row in grp.iterrows()}
        cep, mse = r.get("cep"), r.get("mse")
        any_row = cep if cep is not None else mse
        lr = ("–" if mse is None else f"{mse['lr_mean']:.0e}" if not mse.get("lr_std", 0) > 0
              else "varies by seed (CSV)")
        loss = (f"{cep['final_loss_mean']:.3g} / {mse['final_loss_mean']:.3g}" if cep is not None and mse is not None else "–")
        outside = (f"{100 * cep['outside_mean']:.1f}% / {100 * mse['outside_mean']:.1f}%"
                   if cep is not None and mse is not None else "–")
        lines.append(
            f"| {task} | {beta:g} | {f(cep, 'swd_theta')} | {f(mse, 'swd_theta')} | {verdict(cep, mse, 'swd_theta')} | "
            f"{f(cep, 'swd_mu')} | {f(mse, 'swd_mu')} | {verdict(cep, mse, 'swd_mu')} | "
            f"{any_row.get('swd_floor_mean', math.nan):.3f} | {f(cep, 'mmd_theta')} | {f(mse, 'mmd_theta')} | "
            f"{any_row.get('mmd_floor_mean', math.nan):.3f} | {lr} | {loss} | {outside} |")
    lines += ["", headline(summary)]
    short = raw[raw["theta_target_n"] < budget.n_eval] if "theta_target_n" in raw else raw.iloc[:0]
    if not short.empty:
        lines += ["", f"The tilt of μθ fell short of {budget.n_eval} samples within {budget.pool_draws} draws in "
                      f"{len(short)} cell(s); their sizes are in the CSV (`theta_target_n`)."]
    out.write_text("\n".join(lines) + "\n")


def headline(summary: pd.DataFrame) -> str:
    guided = summary[summary.method.isin(METHODS)]
    parts = []
    for col, name in (("swd_theta", "tilt of μθ"), ("swd_mu", "tilt of μ")):
        counts = {"CEP": 0, "MSE": 0, "tie": 0, "–": 0}
        for _, grp in guided.groupby(["task", "beta"]):
            r = {row["method"]: row for _, row in grp.iterrows()}
            counts[verdict(r.get("cep"), r.get("mse"), col)] += 1
        cells = sum(counts.values())
        parts.append(f"against the {name}, CEP wins {counts['CEP']}, MSE wins {counts['MSE']}, ties {counts['tie']} of "
                     f"{cells} task×β cells")
    return "**Headline** (SWD, wins only where the 95% intervals over seeds do not overlap): " + "; ".join(parts) + "."


def _call(fn, args: tuple, threads: int) -> list[dict]:
    if threads:
        torch.set_num_threads(threads)
    return fn(*args)


def run_jobs(fn, jobs: list[tuple], workers: int, finished) -> None:
    """`fn(*job)` for every job, in `workers` single-threaded processes when > 1 (spawned: a fork after
    OpenMP started can deadlock); `finished(job, rows)` as each ends."""
    if workers > 1:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            futures = {pool.submit(_call, fn, job, 1): job for job in jobs}
            for future in as_completed(futures):
                finished(futures[future], future.result())
    else:
        for job in jobs:
            finished(job, _call(fn, job, 0))


def _finished(partial: Path, label: str, betas: list[float]) -> pd.DataFrame:
    """Rows of (task, seed) jobs an interrupted run already finished with the same budget (`budget_label`) and betas."""
    if not partial.exists():
        return pd.DataFrame()
    done = pd.read_csv(partial)
    done = done[done.budget == label]
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
    partial, label = out.with_suffix(".partial.csv"), budget_label(budget_name, budget)
    previous = _finished(partial, label, betas)
    done = set(zip(previous.get("task", []), previous.get("seed", [])))
    rows = previous.to_dict("records")
    jobs = [(task, betas, seed, budget) for task in tasks for seed in seeds if (task, seed) not in done]
    if done:
        print(f"{len(done)} jobs already finished in {partial}; running the other {len(jobs)}", flush=True)

    def finished(job: tuple, result: list[dict]) -> None:
        for r in result:
            r["budget"] = label
        rows.extend(result)
        pd.DataFrame(result).to_csv(partial, mode="a", header=not partial.exists(), index=False)
        print(f"{job[0]} seed {job[2]}: done ({time.perf_counter() - start:.0f} s)", flush=True)

    run_jobs(run_task, jobs, workers, finished)
    raw = pd.DataFrame(rows).drop(columns="budget")
    order = {task: i for i, task in enumerate(tasks)}
    raw = raw.sort_values(["task", "seed"], key=lambda c: c.map(order) if c.name == "task" else c, kind="stable")
    floor = pd.read_csv(floor_csv) if floor_csv is not None and floor_csv.exists() else None
    summary = summarise(raw, floor)
    write_report(summary, raw, out, command, budget, time.perf_counter() - start, version, floor)
    partial.unlink(missing_ok=True)
    return summary
