"""Does CTRL add a control exactly? CTRL, classifier guidance and classifier-free guidance against
exact conditionals on the toy bandits, at several labelled-data budgets, and two controls composed.

For each task and seed, mu_theta is fitted as in `bench.studies.exactness` (same streams: the same
model). Two controls with a known p(y | x) (`envs.toy.labels`): "right" (y1) and "up" (y2), each
labelled on its own sample of the behaviour (separately labelled data, as CTRL's composition claim
needs). For each budget N of labelled points per control:
- CTRL: clean classifiers p_phi(y | x), calibrated on held-out points; mu_theta with zero-initialised label
  embeddings fine-tuned by reward backpropagation (beta = 1) on the K-step chain: one model for y1, one
  for (y1, y2) trained with both rewards;
- CG, classifier guidance: noisy-input classifiers p_phi(y | x_t, t) on the same points, whose gradient
  guides mu_theta at scale 1 (DPM-Solver-2, 15 steps, as CEP); for (y1, y2) the two gradients add;
- CFG, classifier-free guidance: mu_theta with the label embedding, trained by denoising on the N
  labelled points (labels dropped with probability 0.1), sampled at each guidance weight w (w = 1: the
  conditional model alone). No CFG composition: it needs points labelled with both controls at once.
Targets, exact by rejection (accept x with probability prod_j p(y_j | x)):
- own target: the conditional of the model a method starts from (mu_theta's K-step chain for CTRL,
  mu_theta by the solver for CG and CFG), so the distance is the method's own error;
- the conditional of mu, the true behaviour: the end-to-end error.
`pretrained` rows: the unconditioned model against the same targets, where every method starts.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.harness.provenance import budget_label, code_version, made_by
from bench.studies.exactness import BUDGETS, ExactnessBudget, _cell, _interval, _torch_gen, fit_toy_behaviour, stream
from bench.studies.paired import closer, paired, tally
from bench.studies.resumable import run_resumable
from envs.toy import CONTROLS, TASKS, likelihood, reject, sliced_wasserstein
from policies.core.classifier import Classifier, ClassifierGuidance, calibrate, split, train_classifier
from policies.core.conditioning import ConditionalDiffusion, LabelBlind, fit_conditional, with_labels
from policies.algorithms.ctrl import CTRLConfig, classifier_reward, train_ctrl
from policies.algorithms.finetune import Chain, FinetunedPolicy
from policies.core.samplers import SamplerSpec
from policies.errors import ConfigError

CASES = {"y1": ("right",), "y1,y2": ("right", "up")}  # conditioned on y = 1 for each named control
METHODS = ("pretrained", "ctrl", "cg", "cfg")  # a job may make a subset (the classifiers come with ctrl and cg)
REDO = ("cfg",)  # methods whose rows `--redo` can make again on their own (their random streams are their own)


@dataclass(frozen=True)
class CtrlBudget:
    behaviour: ExactnessBudget = field(default_factory=ExactnessBudget)
    classifier_hidden: int = 128
    classifier_layers: int = 3
    classifier_steps: int = 2_000
    noisy_steps: int = 4_000  # the noisy classifier learns every noise level
    classifier_batch: int = 256
    classifier_lr: float = 1e-3
    holdout: float = 0.2
    chain: str = "sde"
    chain_steps: int = 10
    grid: str = "quadratic"
    iterations: int = 400
    chains: int = 256
    lr: float = 3e-3  # with the true p(y|x) on 8gaussians: SWD 0.105 to its target at 300 iterations (floor 0.052); 1e-2 diverges
    cfg_steps: int = 3_000
    cfg_batch: int = 512
    cfg_lr: float = 1e-3
    cfg_drop: float = 0.1
    cfg_weights: tuple[float, ...] = (1.0, 2.0, 4.0)


CTRL_BUDGETS = {
    "default": CtrlBudget(),
    "test": CtrlBudget(behaviour=BUDGETS["test"], classifier_hidden=64, classifier_steps=300, noisy_steps=300,
                       iterations=60, chains=256, lr=3e-3, cfg_steps=300, cfg_weights=(1.0, 3.0)),
}


def ctrl_config(budget: CtrlBudget, seed: int) -> CTRLConfig:
    return CTRLConfig(chain=budget.chain, chain_steps=budget.chain_steps, chain_grid=budget.grid, beta=1.0,
                      iterations=budget.iterations, batch=budget.chains, lr=budget.lr, seed=seed)


def _labelled(task: str, control: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(stream(seed, task, "labelled", control, str(n)))
    x = TASKS[task].sample(n, rng)
    return torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(CONTROLS[control].label(x, rng))


def _classifier(x: torch.Tensor, y: torch.Tensor, budget: CtrlBudget, noisy: bool, schedule, seed: int, task: str,
                control: str) -> tuple[Classifier, dict]:
    kind = "noisy" if noisy else "clean"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream(seed, task, "init", kind, control, str(len(y))))
        clf = Classifier(0, 2, 2, budget.classifier_hidden, budget.classifier_layers, noisy=noisy)
    gen = _torch_gen(seed, task, "train", kind, control, str(len(y)))
    none = torch.zeros(len(y), 0)
    fit, temp, measure = split(len(y), budget.holdout, gen)
    train_classifier(clf, none[fit], x[fit], y[fit], steps=budget.noisy_steps if noisy else budget.classifier_steps,
                     batch=budget.classifier_batch, lr=budget.classifier_lr, generator=gen, schedule=schedule)
    calibration = calibrate(clf, none, x, y, temp, measure, gen, schedule if noisy else None)
    if not noisy:  # against the truth: mean |p_phi(y=1|x) - p(y=1|x)| on fresh behaviour points
        fresh = TASKS[task].sample(20_000, np.random.default_rng(stream(seed, task, "truth", control)))
        with torch.no_grad():
            p = clf.logits(torch.zeros(len(fresh), 0), torch.as_tensor(fresh, dtype=torch.float32)).softmax(-1)[:, 1]
        calibration["truth_error"] = float(np.abs(p.numpy() - CONTROLS[control].probs(fresh)[:, 1]).mean())
    return clf, calibration


def run_task(task: str, seed: int, sizes: list[int], budget: CtrlBudget, methods: tuple[str, ...] = METHODS,
             progress: bool = False) -> list[dict]:
    b = budget.behaviour
    toy, n = TASKS[task], b.n_eval
    began = time.perf_counter()
    _, model = fit_toy_behaviour(task, seed, b, progress)
    chain = Chain(budget.chain, budget.chain_steps, budget.grid)
    pretrained = FinetunedPolicy(model, chain)
    base = {"task": task, "seed": seed}
    rows: list[dict] = []
    draw = {"chain": lambda k, g: pretrained.sample(torch.zeros(k, 0), g).double().numpy(),
            "solver": lambda k, g: model.sample(torch.zeros(k, 0), 1, SamplerSpec(), generator=g).x[:, 0].double().numpy()}
    targets: dict[str, dict[str, np.ndarray]] = {}
    for case, names in CASES.items():
        accept = likelihood([CONTROLS[c] for c in names], [1] * len(names))
        rng = np.random.default_rng(stream(seed, task, "target", case))
        targets[case] = {"mu": reject(lambda k: toy.sample(k, rng), accept, n, rng, 4 * n)[0],
                         "floor": reject(lambda k: toy.sample(k, rng), accept, n, rng, 4 * n)[0]}
        for start, fn in draw.items():
            gen = _torch_gen(seed, task, "target", case, start)
            targets[case][start] = reject(lambda k: fn(k, gen), accept, n, rng, 4 * n)[0]
        t = targets[case]
        for start, fn in draw.items() if "pretrained" in methods else ():  # the unconditioned model: every start
            x = fn(n, _torch_gen(seed, task, "sample", "pretrained", case, start))
            rows.append(base | {"case": case, "n_labels": 0, "method": f"pretrained ({start})", "weight": math.nan,
                                "swd_own": sliced_wasserstein(x, t[start], seed=seed),
                                "swd_mu": sliced_wasserstein(x, t["mu"], seed=seed),
                                "swd_floor": sliced_wasserstein(t["floor"], t["mu"], seed=seed)})
    ones = {case: with_labels(torch.zeros(n, 0), torch.ones(n, len(names), dtype=torch.long))
            for case, names in CASES.items()}

    def row(case: str, size: int, method: str, x: torch.Tensor, own: str, **extra) -> dict:
        t = targets[case]
        return base | {"case": case, "n_labels": size, "method": method, "weight": math.nan,
                       "swd_own": sliced_wasserstein(x, t[own], seed=seed),
                       "swd_mu": sliced_wasserstein(x, t["mu"], seed=seed)} | extra

    for size in sizes:
        data = {c: _labelled(task, c, size, seed) for c in ("right", "up")}
        clean, noisy = {}, {}
        kinds = [(is_noisy, store) for is_noisy, store, method in ((False, clean, "ctrl"), (True, noisy, "cg"))
                 if method in methods]  # clean classifiers for CTRL, noisy ones for CG
        for c, (x, y) in data.items():
            for is_noisy, store in kinds:
                t0 = time.perf_counter()
                store[c], cal = _classifier(x, y, budget, is_noisy, model.schedule, seed, task, c)
                rows.append(base | {"case": c, "n_labels": size, "method": "noisy classifier" if is_noisy else "classifier",
                                    "seconds": time.perf_counter() - t0} | cal)
        for case, names in CASES.items():
            classes = (2,) * len(names)
            if "ctrl" in methods:
                t0 = time.perf_counter()
                policy = FinetunedPolicy(LabelBlind(model, len(names)), chain, model=ConditionalDiffusion(model, classes))
                record = train_ctrl(policy, torch.zeros(1, 0), classes, classifier_reward([clean[c] for c in names]),
                                    ctrl_config(budget, seed), _torch_gen(seed, task, "train", "ctrl", case, str(size)),
                                    progress=progress)
                x = policy.sample(ones[case], _torch_gen(seed, task, "sample", "ctrl", case, str(size)))
                rows.append(row(case, size, "ctrl", x, "chain", seconds=time.perf_counter() - t0,
                                gradient_steps=record["gradient_steps"], final_loss=record["final_loss"]))
            if "cg" in methods:
                t0 = time.perf_counter()
                guide = ClassifierGuidance([noisy[c] for c in names])
                x = LabelBlind(model, len(names)).sample(ones[case], 1, SamplerSpec(), guide, 1.0,
                                                         _torch_gen(seed, task, "sample", "cg", case, str(size))).x[:, 0]
                rows.append(row(case, size, "cg", x, "solver", seconds=time.perf_counter() - t0))
        if "cfg" not in methods:
            continue
        t0 = time.perf_counter()
        x, y = data["right"]
        conditional = ConditionalDiffusion(model, (2,))
        fit_conditional(conditional, torch.zeros(size, 0), x, y[:, None], steps=budget.cfg_steps, batch=budget.cfg_batch,
                        lr=budget.cfg_lr, drop=budget.cfg_drop, generator=_torch_gen(seed, task, "train", "cfg", str(size)))
        trained = time.perf_counter() - t0
        for w in budget.cfg_weights:
            conditional.guidance_weight = w
            x = conditional.sample(ones["y1"], 1, SamplerSpec(),
                                   generator=_torch_gen(seed, task, "sample", "cfg", str(size), f"{w:g}")).x[:, 0]
            rows.append(row("y1", size, "cfg", x, "solver", weight=w, seconds=trained))
    rows[0]["job_seconds"] = time.perf_counter() - began
    return rows


# ---------------------------------------------------------------- the report

def summarise(raw: pd.DataFrame) -> pd.DataFrame:
    rows = []
    raw = raw.assign(weight=raw["weight"].fillna(-1.0))
    for (task, case, method, weight, size), g in raw.groupby(["task", "case", "method", "weight", "n_labels"], sort=False):
        row = {"task": task, "case": case, "method": method, "weight": weight, "n_labels": size,
               "seeds": g["seed"].nunique()}
        for col in ("swd_own", "swd_mu", "swd_floor", "ece_raw", "ece", "temperature", "accuracy", "truth_error",
                    "seconds"):
            if col in g and g[col].notna().any():
                mean, low, high = _interval(g[col])
                row |= {f"{col}_mean": mean, f"{col}_std": float(g[col].std(ddof=1)) if g[col].notna().sum() > 1
                        else math.nan}
        rows.append(row)
    return pd.DataFrame(rows)


def _method_name(method: str, weight: float) -> str:
    return f"cfg w={weight:g}" if method == "cfg" else method


def write_report(summary: pd.DataFrame, raw: pd.DataFrame, out: Path, command: str, budget: CtrlBudget,
                 sizes: list[int], seconds: float, version: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    raw.to_csv(out.with_suffix(".csv"), index=False, float_format="%.5g")
    seeds = int(summary["seeds"].max())
    made_at = raw.dropna(subset=["code"]).groupby("code")["method"].agg(lambda m: ", ".join(sorted(set(m))))
    versions = [f"{code} ({methods})" for code, methods in made_at.items()] if len(made_at) > 1 else list(made_at.index)
    jobs = raw.groupby(["task", "seed"]).ngroups
    b = budget.behaviour
    lines = [
        "# Adding a control against exact conditionals on the toy bandits: CTRL beside classifier and "
        "classifier-free guidance", "",
        made_by(command, seconds, version), "",
        f"{jobs} (task, seed) jobs, {raw['job_seconds'].sum() / 3600:.1f} h of single-core compute in all. Rows were "
        "made at code " + "; ".join(versions or [version]) + ".", "",
        f"{seeds} seeds, mean ± std over seeds; SWD to n = {b.n_eval} exact samples of each target (rejection with "
        "acceptance p(y|x)). Controls (`envs/toy/labels.py`): y1 = \"right\", p(y1 = 1 | x) = σ(x₁/0.5); "
        "y2 = \"up\", p(y2 = 1 | x) = σ(x₂/0.5); each labelled on its own N behaviour points. Every method "
        "conditions on y = 1. *own*: the conditional of the model the method starts from (μθ's "
        f"{budget.chain_steps}-step {budget.chain} chain for CTRL, μθ by DPM-Solver-2 (15 steps) for CG and CFG); "
        "*μ*: the conditional of the true behaviour. `floor`: two exact samples of the μ target. `pretrained`: the "
        "unconditioned model, where every method starts.", "",
        "Budget: " + ", ".join(f"{k} {v}" for k, v in asdict(budget).items() if k != "behaviour") + "; μθ as "
        "results/exactness.md.", ""]
    for case, title in (("y1", "One control: y1 = 1 (right)"), ("y1,y2", "Two controls composed: y1 = 1 and y2 = 1")):
        part = summary[summary.case == case]
        if part.empty:
            continue
        for target, col in (("own target", "swd_own"), ("the conditional of μ", "swd_mu")):
            lines += [f"## {title}: SWD to {target}", "",
                      "| task | method | " + " | ".join(f"N = {s:,}" for s in sizes) + " | floor |",
                      "|---|---|" + "---:|" * (len(sizes) + 1)]
            for task, grp in part.groupby("task", sort=False):
                floor = grp[grp.method.str.startswith("pretrained")]
                floor_cell = _cell(floor.iloc[0], "swd_floor") if len(floor) else "–"
                for (method, weight), m in grp.groupby(["method", "weight"], sort=False):
                    if method.startswith("pretrained"):
                        cells = [_cell(m.iloc[0], col)] * len(sizes)
                    else:
                        by = {int(r["n_labels"]): r for _, r in m.iterrows()}
                        cells = [_cell(by.get(s), col) for s in sizes]
                    lines.append(f"| {task} | {_method_name(method, weight)} | " + " | ".join(cells) + f" | {floor_cell} |")
            lines.append("")
    clf = summary[summary.method.isin(["classifier", "noisy classifier"])]
    if not clf.empty:
        lines += ["## Classifiers: calibration on held-out points", "",
                  "Expected calibration error (15 bins) before and after temperature scaling, on held-out points used "
                  "for neither the fit nor the temperature; `truth`: mean |p_φ(y=1|x) − p(y=1|x)| on fresh behaviour "
                  "points (clean classifiers).", "",
                  "| task | classifier | control | N | accuracy | ECE raw | ECE calibrated | T | truth |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|"]
        for _, r in clf.iterrows():
            lines.append(f"| {r['task']} | {r['method']} | {r['case']} | {int(r['n_labels']):,} | {_cell(r, 'accuracy')} | "
                         f"{_cell(r, 'ece_raw')} | {_cell(r, 'ece')} | {_cell(r, 'temperature', 2)} | "
                         f"{_cell(r, 'truth_error')} |")
        lines.append("")
    lines += disclosures(raw, budget) + ["", headline(raw, sizes)]
    out.write_text("\n".join(lines) + "\n")


def disclosures(raw: pd.DataFrame, budget: CtrlBudget) -> list[str]:
    """What was chosen with the targets in hand, what each method cost, and what the rows predate."""
    one = raw[raw.case == "y1"]
    seconds = {m: float(one.loc[one.method == m, "seconds"].mean()) for m in ("ctrl", "cg", "cfg")}
    return [
        "## What was chosen with the targets in hand, and what each method cost", "",
        f"- CTRL's learning rate ({budget.lr:g}) was tuned on 8gaussians against its exact target, with the true "
        "p(y|x) as the reward (see `CtrlBudget`); the other tasks use it unchanged.",
        f"- CFG's guidance weight is picked per task and label budget among {', '.join(f'{w:g}' for w in budget.cfg_weights)} "
        "by its mean distance to the target over these same seeds: an oracle choice, to CFG's advantage, made "
        "separately for each target column of the headline.",
        f"- Seconds per (task, N, seed), one control, one core: CTRL {seconds['ctrl']:.0f} (fine-tuning, after its "
        f"classifier), CG {seconds['cg']:.1f} (sampling, after its noisy classifier), CFG {seconds['cfg']:.0f} "
        "(training the conditional model, all weights sampled from it).",
        temperature_note(raw),
    ]


def temperature_note(raw: pd.DataFrame) -> str:
    """Which temperature each classifier kept: a wrong one acts like a beta other than 1 in CTRL's reward."""
    rules = raw.loc[raw.method.str.contains("classifier"), "temperature_rule"] if "temperature_rule" in raw else None
    if rules is None or rules.isna().any():
        return ("- Some rows predate cross-fitted temperature scaling (the rows' code versions are above): their "
                "classifiers' temperatures were fitted on one half of the holdout and kept even where they did not "
                "lower the held-out NLL. CTRL's reward is the calibrated classifier, so those rows are made again "
                "when the study is run again.")
    counts = rules.value_counts()
    return (f"- Temperatures (`policies.core.classifier.calibrate`): two-fold cross-fitted over the whole holdout; "
            "fitted on it where the cross-fitted NLL beat the raw classifier's, else T = 1: fitted for "
            f"{counts.get('fitted', 0)} and T = 1 for {counts.get('T = 1', 0)} of {len(rules)} classifiers (clean "
            "and noisy, every task, N and seed). The calibration table's NLL and ECE are the cross-fitted ones, so "
            "no point is scored by a temperature it helped fit.")


def headline(raw: pd.DataFrame, sizes: list[int]) -> str:
    """Per label budget and target: CTRL against CG and against the best CFG weight, each by the 95% t-interval of
    the per-seed differences in SWD (paired: the same seed's behaviour model and targets); a win is an
    interval below zero, a loss above, a tie covering it. The best weight is picked with the target in hand."""
    names = {"a": "wins", "b": "losses", "tie": "ties"}
    parts = []
    one = raw[raw.case == "y1"]
    for col, target in (("swd_own", "each method's own target"), ("swd_mu", "the conditional of μ")):
        cells = []
        for size in sizes:
            at = one[one.n_labels == size]
            against_cg, against_cfg = [], []
            for _, grp in at.groupby("task", sort=False):
                ctrl, cg, cfg = (grp[grp.method == m] for m in ("ctrl", "cg", "cfg"))
                if ctrl.empty or cg.empty or cfg.empty:
                    continue
                best = cfg.groupby("weight")[col].mean().idxmin()
                against_cg.append(closer(paired(ctrl, cg, col)))
                against_cfg.append(closer(paired(ctrl, cfg[cfg.weight == best], col)))
            cells.append(f"N = {size:,}: against CG {tally(against_cg, names)}; against the best CFG weight "
                         f"{tally(against_cfg, names)} (of {len(against_cg)} tasks)")
        parts.append(f"one control, to {target}: " + "; ".join(cells))
    both = raw[raw.case == "y1,y2"]
    if not both.empty:
        cells = []
        for size in sizes:
            at = both[both.n_labels == size]
            verdicts = [closer(paired(grp[grp.method == "ctrl"], grp[grp.method == "cg"], "swd_own"))
                        for _, grp in at.groupby("task", sort=False)
                        if (grp.method == "ctrl").any() and (grp.method == "cg").any()]
            cells.append(f"N = {size:,}: {tally(verdicts, names)} of {len(verdicts)} tasks")
        parts.append("two controls composed, against the two classifiers' summed guidance, to each one's own target: "
                     + "; ".join(cells))
    return ("**Headline** (CTRL minus the other method's SWD per seed, a win when its 95% interval is below zero, a "
            "tie when it covers zero): " + ". ".join(parts) + ".")


def run(tasks: list[str], seeds: list[int], sizes: list[int], budget_name: str, out: Path, command: str,
        workers: int = 1, redo: tuple[str, ...] = (), from_rows: list[Path] | None = None) -> pd.DataFrame:
    """(task, seed) jobs in `workers` single-threaded processes; resumable (`bench.studies.resumable`).

    `redo`: methods of REDO whose finished rows made at another code version are made again, alone, at
    this one (after a fix to that method; the other rows stay, being the same numbers)."""
    version, start = code_version(), time.perf_counter()
    budget = CTRL_BUDGETS[budget_name]
    out.parent.mkdir(parents=True, exist_ok=True)
    if set(redo) - set(REDO):
        raise ConfigError(f"--redo {','.join(redo)!r}: only these methods can be made again alone: {', '.join(REDO)}")

    def made(grp: pd.DataFrame, method: str) -> bool:
        if method == "pretrained":
            return grp["method"].str.startswith("pretrained").any()
        return set(sizes) <= set(grp.loc[grp["method"] == method, "n_labels"])

    def reuse(grp: pd.DataFrame) -> pd.DataFrame | None:
        grp = grp[~(grp["method"].isin(redo) & (grp["code"] != version))]
        return grp if all(made(grp, m) for m in METHODS if m not in REDO) else None

    def remainder(job: tuple, kept: pd.DataFrame) -> tuple | None:
        missing = tuple(m for m in REDO if not made(kept, m))
        return (*job[:4], missing) if missing else None

    jobs = [(task, seed, sizes, budget) for task in tasks for seed in seeds]
    label = budget_label(budget_name, budget)
    rows, _ = run_resumable(run_task, jobs, lambda job: (job[0], job[1]), out, label, workers, reuse, remainder,
                            from_rows=from_rows)
    raw = pd.DataFrame(rows)
    raw = raw[raw.n_labels.isin([0, *sizes])]
    order = {task: i for i, task in enumerate(tasks)}
    raw = raw.sort_values(["task", "seed"], key=lambda c: c.map(order) if c.name == "task" else c, kind="stable")
    summary = summarise(raw)
    write_report(summary, raw, out, command, budget, sizes, time.perf_counter() - start, version)
    out.with_suffix(".partial.csv").unlink(missing_ok=True)
    return summary
