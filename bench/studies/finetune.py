"""Does fine-tuning reach the tilted target? DDPO against exact samples on the toy bandits, beside CEP.

For each task and seed the behaviour model mu_theta is fitted as in `bench.studies.exactness` (same streams, so
the same model). For each beta, with the task's exact Q as the reward:
- CEP: f_phi by contrastive energy prediction, guided DPM-Solver-2 (15 steps) at scale 1;
- DDPO: a copy of mu_theta fine-tuned on its K-step chain by `policies.algorithms.ddpo.train_ddpo`.
Three exact targets, all by rejection (`envs.toy.tilt`):
- tilt of the chain, p_chain exp(beta Q): p_chain being mu_theta sampled by DDPO's own K-step chain,
  the optimum of DDPO's KL-regularised objective, so the distance is the fine-tuning's own error;
- tilt of mu_theta, mu_theta exp(beta Q) (mu_theta by CEP's solver): the same target for both methods;
- tilt of mu, the true behaviour: the end-to-end error.
'chain' rows per task measure K-step chains themselves (DDPO's and the other memoryless variants)
against mu_theta and mu (beta = 0): the error a K-step chain adds before any fine-tuning.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.studies.exactness import (BUDGETS, ExactnessBudget, _distances, _fit_energy, _interval, _torch_gen,
                                     fit_toy_behaviour, fit_toy_q, stream, theta_tilt, toy_support)
from bench.studies.paired import closer, paired, tally, within
from bench.studies.resumable import run_resumable
from bench.harness.provenance import budget_label, code_version, made_by
from envs.toy import TASKS, mean_q, sample_target, sliced_wasserstein
from policies.algorithms.ddpo import DDPOConfig, train_ddpo
from policies.algorithms.finetune import CHAINS, GRIDS, Chain, FinetunedPolicy
from policies.core.samplers import SamplerSpec
from policies.errors import ConfigError

RATIO_GOAL = 1.5  # DDPO's distance within this factor of CEP's
STALE_DDPO_ROWS = {"a3decaa0bf2b"}  # code versions whose DDPO rows predate its leave-one-out baseline
REWARDS = ("exact", "learned")


@dataclass(frozen=True)
class FinetuneBudget:
    behaviour: ExactnessBudget = field(default_factory=ExactnessBudget)
    chain: str = "sde"
    chain_steps: int = 10
    grid: str = "quadratic"
    estimator: str = "ppo"
    iterations: int = 400
    chains: int = 1024  # chains per iteration (one state: the toy bandits are unconditional)
    minibatches: int = 4
    inner_epochs: int = 1
    lr: float = 3e-3
    # not DDPOConfig's 5 (the official adv_clip_max): the exact-Q rows of results/finetune.csv were made with 10, and
    # the Q_0 rows beside them must share it; advantages are standardised over 1024 chains, so it rarely binds
    adv_clip: float = 10.0
    # "exact": CEP and DDPO with the task's exact Q; "learned": with a Q_0 regressed on the data's rewards alone
    # (`fit_toy_q`), the offline case. One alone makes only its rows (`--rewards`), to add them to another run's.
    rewards: tuple[str, ...] = REWARDS
    q0_steps: int = 5_000


FINETUNE_BUDGETS = {
    "default": FinetuneBudget(),
    "test": FinetuneBudget(behaviour=BUDGETS["test"], iterations=60, chains=256, minibatches=2, lr=1e-2, q0_steps=200),
}


def toy_reward(task: str):
    q = TASKS[task].q
    return lambda s, a: torch.as_tensor(q(a.detach().double().cpu().numpy()), dtype=torch.float32)


def ddpo_config(budget: FinetuneBudget, beta: float, seed: int) -> DDPOConfig:
    return DDPOConfig(chain=budget.chain, chain_steps=budget.chain_steps, beta=beta, estimator=budget.estimator,
                      iterations=budget.iterations, states_per_iteration=1, samples_per_state=budget.chains,
                      minibatches=budget.minibatches, inner_epochs=budget.inner_epochs, lr=budget.lr,
                      adv_clip=budget.adv_clip, seed=seed)


def run_task(task: str, betas: list[float], seed: int, budget: FinetuneBudget, progress: bool = False) -> list[dict]:
    b = budget.behaviour
    toy = TASKS[task]
    began = t0 = time.perf_counter()
    x, model = fit_toy_behaviour(task, seed, b, progress)
    none = torch.zeros(b.data, 0)
    chain = Chain(budget.chain, budget.chain_steps, budget.grid)
    pretrained = FinetunedPolicy(model, chain)
    fresh = toy.sample(b.n_eval, np.random.default_rng(stream(seed, task, "fresh")))
    mu_theta = model.sample(torch.zeros(b.n_eval, 0), 1, SamplerSpec(),
                            generator=_torch_gen(seed, task, "sample", "behaviour")).x[:, 0]
    base = {"task": task, "seed": seed}
    rows = []
    for kind in CHAINS:
        for grid in GRIDS:
            variant = Chain(kind, budget.chain_steps, grid)
            drawn = FinetunedPolicy(model, variant).sample(torch.zeros(b.n_eval, 0),
                                                           _torch_gen(seed, task, "sample", "chain", kind, grid))
            if variant == chain:
                on_chain = drawn
            rows.append(base | {"beta": 0.0, "method": "chain", "chain": f"{kind}/{grid}",
                                "swd_theta": sliced_wasserstein(drawn, mu_theta, seed=seed),
                                "swd_mu": sliced_wasserstein(drawn, fresh, seed=seed),
                                "swd_behaviour": sliced_wasserstein(mu_theta, fresh, seed=seed)})
    support, support_q = toy_support(model, task, seed, b)
    pool_gen, chain_gen = _torch_gen(seed, task, "pool"), _torch_gen(seed, task, "pool", "chain")

    def mu_theta_batch(k: int) -> torch.Tensor:
        return model.sample(torch.zeros(k, 0), 1, SamplerSpec(), generator=pool_gen).x[:, 0]

    def chain_batch(k: int) -> torch.Tensor:
        return pretrained.sample(torch.zeros(k, 0), chain_gen)

    q0 = fit_toy_q(x, task, seed, budget.q0_steps) if "learned" in budget.rewards else None
    exact_q = toy_reward(task)
    rewards = [("", "", support_q, exact_q)] if "exact" in budget.rewards else []
    if q0 is not None:  # the same two methods with the learned Q_0 as their reward, against the same targets
        with torch.no_grad():
            support_q0 = q0(torch.zeros(support.shape[:2] + (0,)), support)
        rewards.append((" (Q₀)", " q0", support_q0, lambda s, a: q0(torch.zeros(len(a), 0), a.detach())))
    # each entry: (label, stream tag, Q of CEP's support samples, DDPO's reward)

    def q_means(samples: torch.Tensor) -> dict:
        """The exact Q of a method's samples and the learned Q_0's view of them: the gap is exploitation."""
        a = torch.as_tensor(samples, dtype=torch.float32)
        out = {"q_exact": float(exact_q(None, a).mean())}
        if q0 is not None:
            with torch.no_grad():
                out["q_learned"] = float(q0(torch.zeros(len(a), 0), a).mean())
        return out

    for beta in betas:
        key = f"beta={beta:g}"
        target_mu, _ = sample_target(toy, beta, b.n_eval, np.random.default_rng(stream(seed, task, "target", key)))
        target_theta, _ = theta_tilt(mu_theta_batch, task, beta, seed, b)
        target_chain, _ = theta_tilt(chain_batch, task, beta, seed, b, purpose="tilt-chain")
        # the exact Q of each method's own target: a method above it over-tilts (too large a beta, a missing KL)
        q_target = {"theta": mean_q(toy, target_theta), "chain": mean_q(toy, target_chain)}
        for label, tag, q_support, reward in rewards:
            t0 = time.perf_counter()
            energy, loss, _ = _fit_energy("cep", b, model, x, none, support, q_support, None, beta, seed, task,
                                          key + tag)
            cep = model.sample(torch.zeros(b.n_eval, 0), 1, SamplerSpec(), energy, 1.0,
                               _torch_gen(seed, task, "sample", "cep" + tag, key)).x[:, 0]
            rows.append(base | _row(beta, "cep" + label, cep, target_theta, target_mu, target_chain, seed)
                        | {"final_loss": loss, "seconds": time.perf_counter() - t0} | q_means(cep)
                        | {"q_target": q_target["theta"]})
            t0 = time.perf_counter()
            policy = FinetunedPolicy(model, chain)
            record = train_ddpo(policy, torch.zeros(1, 0), reward, ddpo_config(budget, beta, seed),
                                _torch_gen(seed, task, "train", "ddpo" + tag, key), progress=progress)
            tuned = policy.sample(torch.zeros(b.n_eval, 0), _torch_gen(seed, task, "sample", "ddpo" + tag, key))
            rows.append(base | _row(beta, "ddpo" + label, tuned, target_theta, target_mu, target_chain, seed)
                        | {"swd_chain_start": sliced_wasserstein(on_chain, target_chain, seed=seed),
                           "final_loss": record["final_loss"], "gradient_steps": record["gradient_steps"],
                           "samples": record["samples"], "seconds": time.perf_counter() - t0} | q_means(tuned)
                        | {"q_target": q_target["chain"]})
    rows[0]["job_seconds"] = time.perf_counter() - began  # the whole job: behaviour, targets, both methods
    return rows


def _row(beta: float, method: str, samples: torch.Tensor, target_theta: np.ndarray, target_mu: np.ndarray,
         target_chain: np.ndarray, seed: int) -> dict:
    swd_th, mmd_th = _distances(samples, target_theta, seed)
    swd_mu, mmd_mu = _distances(samples, target_mu, seed)
    swd_ch, _ = _distances(samples, target_chain, seed)
    return {"beta": beta, "method": method, "swd_theta": swd_th, "mmd_theta": mmd_th, "swd_mu": swd_mu,
            "mmd_mu": mmd_mu, "swd_chain": swd_ch}


def summarise(raw: pd.DataFrame) -> pd.DataFrame:
    rows = []
    raw = raw.assign(chain=raw["chain"].fillna("")) if "chain" in raw else raw.assign(chain="")
    for (task, beta, method, chain), g in raw.groupby(["task", "beta", "method", "chain"], sort=False):
        row = {"task": task, "beta": beta, "method": method, "chain": chain, "seeds": g["seed"].nunique()}
        for col in ("swd_theta", "swd_mu", "swd_chain", "swd_chain_start", "mmd_theta", "swd_behaviour", "final_loss",
                    "seconds", "q_exact", "q_learned", "q_target"):
            if col in g and g[col].notna().any():
                mean, low, high = _interval(g[col])
                row |= {f"{col}_mean": mean, f"{col}_std": float(g[col].std(ddof=1)) if len(g) > 1 else math.nan,
                        f"{col}_low": low, f"{col}_high": high}
        rows.append(row)
    return pd.DataFrame(rows)


def _cell(r: pd.Series | None, col: str) -> str:
    if r is None or f"{col}_mean" not in r or pd.isna(r[f"{col}_mean"]):
        return "–"
    return f"{r[f'{col}_mean']:.3f} ± {r[f'{col}_std']:.3f}"


def write_report(summary: pd.DataFrame, raw: pd.DataFrame, out: Path, command: str, budget: FinetuneBudget,
                 seconds: float, version: str, floor: pd.DataFrame | None, merged: str | None = None) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    raw.to_csv(out.with_suffix(".csv"), index=False, float_format="%.5g")
    seeds = int(summary["seeds"].max())
    floors = (floor.set_index(["task", "beta"])["swd_floor_mean"] if floor is not None else pd.Series(dtype=float))
    b = budget.behaviour
    versions = sorted(set(raw["code"].dropna())) if "code" in raw else [version]
    jobs = raw.groupby(["task", "seed"]).ngroups
    lines = [
        "# Fine-tuning against exact targets on the toy bandits: DDPO beside CEP", "",
        made_by(command, seconds, version), "",
        f"{jobs} (task, seed) jobs, {raw['job_seconds'].sum() / 3600:.1f} h of single-core compute in all (the wall time "
        "above is the last invocation's; an interrupted study resumes from its finished jobs). Rows were made at code "
        + ", ".join(versions) + ".", "",
        f"{seeds} seeds, mean ± std over seeds; SWD to n = {b.n_eval} exact samples of each target (all by rejection). "
        "The task's exact Q is the reward (DDPO) and Q₀ (CEP). The same μθ (fitted as in results/exactness.md) "
        "is guided by CEP (DPM-Solver-2, 15 steps, scale 1) and fine-tuned by DDPO on its "
        f"{budget.chain_steps}-step {budget.chain} chain (η = 1, {budget.grid} time grid) for {budget.iterations} "
        f"iterations of {budget.chains} chains ({budget.estimator} estimator, {budget.minibatches} minibatches, "
        f"lr {budget.lr:g}). Targets:",
        f"- **tilt of the chain**, p_chain·exp(β·Q), p_chain = μθ sampled by DDPO's {budget.chain_steps}-step chain: "
        "the optimum of DDPO's KL-regularised objective, so this is the fine-tuning's own error; CEP's own target is "
        "the tilt of μθ, so *own target* compares each method with the optimum it aims at;",
        "- **tilt of μθ**, μθ·exp(β·Q), μθ as CEP's solver samples it: one target for both methods (DDPO's distance "
        "includes its chain's sampling error, shown in the first table);",
        "- **tilt of μ**, the true behaviour tilted: the end-to-end error.",
        f"Goal: DDPO within {RATIO_GOAL}× of CEP's distance at every task at β = 3. `floor`: two exact samples "
        "(results/toy_noise_floor.md).", "",
        "Budget: " + ", ".join(f"{k} {v}" for k, v in asdict(budget).items() if k != "behaviour") + "; behaviour and CEP "
        "as results/exactness.md: " + ", ".join(f"{k} {v}" for k, v in asdict(b).items()) + ".", "",
        f"## {budget.chain_steps}-step chains themselves (β = 0), before fine-tuning", "",
        f"Every memoryless {budget.chain_steps}-step chain sampling the same μθ; **bold**: DDPO's.", "",
        "| task | chain | SWD chain vs μθ (solver) | SWD chain vs μ | SWD μθ (solver) vs μ |", "|---|---|---:|---:|---:|"]
    mine = f"{budget.chain}/{budget.grid}"
    for _, r in summary[summary.method == "chain"].iterrows():
        name = f"**{r['chain']}**" if r["chain"] == mine else r["chain"]
        lines.append(f"| {r['task']} | {name} | {_cell(r, 'swd_theta')} | {_cell(r, 'swd_mu')} | "
                     f"{_cell(r, 'swd_behaviour')} |")
    lines += ["", "## Fine-tuned (DDPO) and guided (CEP) samples", "",
              "`own target`: CEP to the tilt of μθ, DDPO to the tilt of its chain (`start`: the chain before fine-tuning, "
              "to the same target). DDPO/CEP: the geometric mean over seeds of each seed's ratio, with its 95% "
              f"t-interval (paired: both methods share each seed's μθ and targets). Within {RATIO_GOAL}×: *yes* when the "
              f"interval lies at or below {RATIO_GOAL}, *no* when above, *tie* when it covers {RATIO_GOAL}.", "",
              "| task | β | own target: CEP | DDPO (start) | DDPO/CEP | tilt of μθ: CEP | DDPO | DDPO/CEP | tilt of μ: CEP | "
              f"DDPO | DDPO/CEP | within {RATIO_GOAL}× (own / μθ / μ) | SWD floor | s per run: CEP / DDPO |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    verdicts: dict[str, dict[tuple[str, float], str | None]] = {"own": {}, "theta": {}, "mu": {}}
    for (task, beta), grp in summary[summary.method.isin(["cep", "ddpo"])].groupby(["task", "beta"], sort=False):
        r = {row["method"]: row for _, row in grp.iterrows()}
        cep, ddpo = r.get("cep"), r.get("ddpo")
        at = raw[(raw.task == task) & (raw.beta == beta)]
        runs = {m: at[at.method == m] for m in ("cep", "ddpo")}
        ratios = {"own": paired(runs["ddpo"], runs["cep"], "swd_chain", ratio=True, col_b="swd_theta"),
                  "theta": paired(runs["ddpo"], runs["cep"], "swd_theta", ratio=True),
                  "mu": paired(runs["ddpo"], runs["cep"], "swd_mu", ratio=True)}
        for key, ratio in ratios.items():
            verdicts[key][(task, beta)] = within(ratio, RATIO_GOAL)
        verdict = " / ".join(verdicts[key][(task, beta)] or "–" for key in ratios)
        start = f" ({ddpo['swd_chain_start_mean']:.3f})" if ddpo is not None else ""
        seconds = " / ".join(f"{r['seconds_mean']:.0f}" if r is not None else "–" for r in (cep, ddpo))
        lines.append(f"| {task} | {beta:g} | {_cell(cep, 'swd_theta')} | {_cell(ddpo, 'swd_chain')}{start} | "
                     f"{ratios['own'].text()} | {_cell(cep, 'swd_theta')} | {_cell(ddpo, 'swd_theta')} | "
                     f"{ratios['theta'].text()} | {_cell(cep, 'swd_mu')} | {_cell(ddpo, 'swd_mu')} | "
                     f"{ratios['mu'].text()} | {verdict} | {floors.get((task, beta), math.nan):.3f} | {seconds} |")
    lines += learned_section(summary, raw)
    lines += ["", *disclosures(summary, raw, budget), *([f"- {merged}"] if merged else []), "", headline(verdicts)]
    out.write_text("\n".join(lines) + "\n")


def learned_section(summary: pd.DataFrame, raw: pd.DataFrame) -> list[str]:
    """CEP and DDPO with Q_0 learned from the data as their reward: distances to the same exact tilts, and the
    exact Q of their samples against Q_0's view of them (a method that exploits Q_0 off the data shows a gap)."""
    if not (raw.method == "ddpo (Q₀)").any():
        return []
    learned = raw[raw.method == "ddpo (Q₀)"]
    seeds = ", ".join(str(int(v)) for v in sorted(learned["seed"].unique()))
    codes = ", ".join(sorted(set(learned["code"].dropna()))) if "code" in learned else "this run"
    lines = ["", "## With a Q₀ learned from the data (the offline case)", "",
             f"Seeds {seeds} at β = {', '.join(f'{b:g}' for b in sorted(learned['beta'].unique()))} (rows made at code "
             f"{codes}). Q₀ regresses the data's rewards (the exact Q of the behaviour samples) and nothing else; CEP's "
             "energy is trained on Q₀ of μθ's support samples, DDPO fine-tunes on Q₀ of its own samples. Targets as "
             "above (exact). `Q exact / Q₀`: the mean exact Q of a method's samples and Q₀'s mean over them. Paired "
             "per-seed differences in SWD to the tilt of μθ, with their 95% t-intervals: DDPO − CEP, both on Q₀; and "
             "each method on Q₀ against itself on the exact Q (the price of learning Q₀), over the same seeds.", "",
             "| task | β | seeds | CEP (Q₀): SWD tilt of μθ | DDPO (Q₀) | DDPO − CEP | CEP: Q₀ − exact Q | "
             "DDPO: Q₀ − exact Q | CEP (Q₀): Q exact / Q₀ | DDPO (Q₀): Q exact / Q₀ |",
             "|---|---:|---:|---:|---:|---|---|---|---|---|"]
    verdicts: dict[str, list[str | None]] = {"DDPO − CEP on Q₀": [], "CEP on Q₀ − on the exact Q": [],
                                             "DDPO on Q₀ − on the exact Q": []}
    for (task, beta), grp in summary[summary.method.isin(["cep (Q₀)", "ddpo (Q₀)"])].groupby(["task", "beta"],
                                                                                             sort=False):
        r = {row["method"]: row for _, row in grp.iterrows()}
        if "ddpo (Q₀)" not in r:
            continue
        at = raw[(raw.task == task) & (raw.beta == beta)]
        run = {m: at[at.method == m] for m in ("cep", "ddpo", "cep (Q₀)", "ddpo (Q₀)")}
        diffs = [paired(run["ddpo (Q₀)"], run["cep (Q₀)"], "swd_theta"), paired(run["cep (Q₀)"], run["cep"], "swd_theta"),
                 paired(run["ddpo (Q₀)"], run["ddpo"], "swd_theta")]
        for name, d in zip(verdicts, diffs):
            verdicts[name].append(closer(d))
        q = lambda m: f"{_cell(r.get(m), 'q_exact')} / {_cell(r.get(m), 'q_learned')}"  # noqa: E731
        lines.append(f"| {task} | {beta:g} | {int(r['ddpo (Q₀)']['seeds'])} | {_cell(r.get('cep (Q₀)'), 'swd_theta')} | "
                     f"{_cell(r.get('ddpo (Q₀)'), 'swd_theta')} | " + " | ".join(d.text() for d in diffs)
                     + f" | {q('cep (Q₀)')} | {q('ddpo (Q₀)')} |")
    names = {"a": "closer", "b": "farther", "tie": "ties (the interval covers zero)"}
    decided = lambda v: sum(x is not None for x in v)  # noqa: E731  (a one-seed cell has no interval)
    lines += ["", "On Q₀ (task×β cells with two or more seeds; the first named closer or farther): " + "; ".join(
        f"{name}: {tally(v, names)} of {decided(v)}" for name, v in verdicts.items()) + "."]
    return lines


def disclosures(summary: pd.DataFrame, raw: pd.DataFrame, budget: FinetuneBudget) -> list[str]:
    """What was chosen with the targets in hand, what each method cost, and what the rows predate."""
    b = budget.behaviour
    seconds = {m: float(raw.loc[raw.method == m, "seconds"].mean()) if (raw.method == m).any() else math.nan
               for m in ("cep", "ddpo")}
    return [
        "## What was chosen with the targets in hand, and what each method cost", "",
        f"- DDPO's chain ({budget.chain}/{budget.grid}, {budget.chain_steps} steps) was chosen from the first table, "
        "made on these same seeds against μθ; its learning rate and iterations were not tuned against the tilts. "
        "CEP's settings are results/exactness.md's, chosen there by CEP's own loss.",
        f"- Cost per (task, β, seed): DDPO {seconds['ddpo']:.0f} s and {budget.iterations * budget.chains:,} queries of "
        f"the exact Q on its own samples ({budget.iterations} iterations × {budget.chains} chains); CEP "
        f"{seconds['cep']:.0f} s and {b.groups * b.m:,} queries of Q on μθ's support samples ({b.groups} groups × "
        f"M = {b.m}). Both on one core.",
        "- The exact Q on DDPO's own samples is an oracle an offline method does not have: there the reward is a Q₀ "
        "learned from the data, which DDPO can exploit off the data's support. "
        + ("The section above measures that with a Q₀ fitted on the data alone."
           if (raw.method == "ddpo (Q₀)").any() else
           "These rows do not measure that (rows made before the study fitted a Q₀; run it again to add them)."),
    ] + ([
        "- Rows made at a3decaa0bf2b predate two changes to DDPO: the leave-one-out group baseline (here one state "
        f"with G = {budget.chains} chains, so the old baseline shrank the reward's gradient by 1/{budget.chains} "
        f"only) and the importance weight of the score estimator (this study runs `{budget.estimator}`). Every row "
        f"has adv_clip {budget.adv_clip:g} (not DDPOConfig's 5, the official value; advantages are standardised over "
        f"{budget.chains} chains, so either rarely binds)."] if STALE_DDPO_ROWS & set(raw["code"].dropna()) else [])


def headline(verdicts: dict[str, dict[tuple[str, float], str | None]]) -> str:
    names = {"yes": "within", "no": "beyond", "tie": "undecided (the interval covers the goal)"}
    parts = []
    for key, name in (("own", "against each one's own target"), ("theta", "against the tilt of μθ"),
                      ("mu", "against the tilt of μ")):
        cells = verdicts[key]
        misses = [task for (task, beta), v in cells.items() if beta == 3 and v != "yes"]
        parts.append(f"{name}: {tally(list(cells.values()), names)} of {len(cells)} task×β cells"
                     + (f" (not within at β = 3: {', '.join(misses)})" if misses else ""))
    return (f"**Headline** (SWD, DDPO/CEP per seed, within {RATIO_GOAL}× when the 95% interval of the paired ratio "
            "lies at or below it): " + "; ".join(parts) + ".")


def merge_rows(parts: list[list[dict]]) -> list[dict]:
    """Rows of several runs as one (e.g. the exact-Q rows of one and the Q_0 rows of a later one). A row that
    two runs both made (the beta = 0 chain rows every job makes) is kept from the first, with the later copy's
    SWD beside it (`swd_theta_again`, read by `fit_check`), and the time of the job that made the dropped copy."""
    if len(parts) == 1:
        return parts[0]
    key = ["task", "seed", "beta", "method", "chain"]
    frames = [pd.DataFrame(p).assign(chain=lambda d: d["chain"].fillna("") if "chain" in d else "") for p in parts]
    first, rest = frames[0], pd.concat(frames[1:], ignore_index=True)
    later = rest.merge(first[key], on=key, how="left", indicator=True)
    new = later[later.pop("_merge") == "left_only"]
    if "job_seconds" in rest:  # a job's whole time sits on its first row, maybe a chain row the merge drops
        spent = later.groupby(["task", "seed"])["job_seconds"].transform(lambda s: s.sum(min_count=1))
        new = new.assign(job_seconds=spent[new.index].where(~new.duplicated(["task", "seed"])))
    again = rest[key + ["swd_theta"]].rename(columns={"swd_theta": "swd_theta_again"}).drop_duplicates(key)
    return pd.concat([first.merge(again, on=key, how="left"), new], ignore_index=True).to_dict("records")


def fit_check(raw: pd.DataFrame, files: int) -> str | None:
    """What the rows that two runs both made say: the same SWD means the runs fitted the same mu_theta and drew
    the same targets, so their rows pair by seed. None when the rows come from one file."""
    if files < 2:
        return None
    both = raw.dropna(subset=["swd_theta_again"]) if "swd_theta_again" in raw else raw.iloc[:0]
    if both.empty:
        return "The merged runs share no row, so nothing checks that they fitted the same μθ."
    gap = float((both["swd_theta"] - both["swd_theta_again"]).abs().max())
    made = ", ".join(sorted(set(both["method"])))
    head = f"Rows come from {files} row files; the {len(both)} rows that two of them both made ({made}) "
    if gap <= 1e-4 * float(both["swd_theta"].abs().max()):
        return head + (f"agree to the CSV's 5 digits (largest SWD difference {gap:.1e}): the runs fitted the same μθ "
                       "and drew the same targets.")
    return head + (f"differ (largest SWD difference {gap:.3g}): the runs fitted different μθ, so rows of different "
                   "runs are not paired by seed.")


def run(tasks: list[str], betas: list[float], seeds: list[int], budget_name: str, out: Path, command: str,
        floor_csv: Path | None, workers: int = 1, from_rows: list[Path] | None = None,
        rewards: tuple[str, ...] | None = None) -> pd.DataFrame:
    """(task, seed) jobs, in `workers` single-threaded processes when > 1; resumable
    (`bench.studies.resumable`): an interrupted run started again redoes only the jobs left. `from_rows`: the
    report again from earlier runs' rows (CSVs, merged by `merge_rows`), nothing run. `rewards`:
    a subset of REWARDS, to make only those rows."""
    version, start = code_version(), time.perf_counter()
    budget = FINETUNE_BUDGETS[budget_name]
    if rewards is not None:
        if not rewards or not set(rewards) <= set(REWARDS):
            raise ConfigError(f"--rewards {','.join(rewards)}: choose one or both of {', '.join(REWARDS)}")
        budget = replace(budget, rewards=tuple(r for r in REWARDS if r in rewards))
    out.parent.mkdir(parents=True, exist_ok=True)
    made = "ddpo" if "exact" in budget.rewards else "ddpo (Q₀)"

    def reuse(grp: pd.DataFrame) -> pd.DataFrame | None:
        if not set(betas) <= set(grp.loc[grp.method == made, "beta"]):
            return None
        return grp[grp.beta.isin(betas) | (grp.method == "chain")]

    jobs = [(task, betas, seed, budget) for task in tasks for seed in seeds]
    key = lambda job: (job[0], job[2])  # noqa: E731
    label = budget_label(budget_name, budget)
    rows, _ = run_resumable(run_task, jobs, key, out, label, workers, reuse, from_rows=from_rows, merge=merge_rows)
    raw = pd.DataFrame(rows)
    check = fit_check(raw, len(from_rows or ()))
    raw = raw.drop(columns="swd_theta_again", errors="ignore")
    raw = raw[raw.beta.isin(betas) | (raw.method == "chain")]
    order = {task: i for i, task in enumerate(tasks)}
    raw = raw.sort_values(["task", "seed"], key=lambda c: c.map(order) if c.name == "task" else c, kind="stable")
    floor = pd.read_csv(floor_csv) if floor_csv is not None and floor_csv.exists() else None
    summary = summarise(raw)
    write_report(summary, raw, out, command, budget, time.perf_counter() - start, version, floor, check)
    out.with_suffix(".partial.csv").unlink(missing_ok=True)
    return summary
