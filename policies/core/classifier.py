"""Classifiers p(y | s, a) of a control's labels: CTRL's reward (on clean actions) and the guide of
classifier guidance (on noisy actions a_t at time t).

CTRL's optimum is p_pre(a|s) p(y|s,a) only as far as the classifier's probabilities are right, not
merely its ranking, so every classifier is calibrated on held-out data by temperature scaling
(Guo et al. 2017) and its expected calibration error is measured on data used for neither the fit
nor the temperature that scores it (cross-fitted halves of the holdout; T = 1 where that does not help).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from policies.core.conditioning import NULL, split_labels
from policies.errors import ConfigError
from policies.core.networks import FourierTime, allow_empty_state, mlp
from policies.core.schedule import VPSchedule
from policies.core.training import TrainHooks, optimiser_step, run_steps

ECE_BINS = 15


class Classifier(nn.Module):
    """An MLP (SiLU, smooth: its input gradient drives reward backpropagation and guidance) on
    [s, a] (clean) or [s, a_t, emb(t)] (noisy), with a temperature that calibration sets."""

    def __init__(self, state_dim: int, action_dim: int, classes: int, hidden: int = 256, layers: int = 3,
                 noisy: bool = False, time_dim: int = 32):
        super().__init__()
        if classes < 2:
            raise ConfigError(f"a classifier needs at least two classes, got {classes}")
        self.classes, self.noisy = classes, noisy
        self.time_embed = FourierTime(time_dim) if noisy else None
        with allow_empty_state():
            self.body = mlp([state_dim + action_dim + (time_dim if noisy else 0)] + [hidden] * layers + [classes], nn.SiLU)
        self.register_buffer("log_temperature", torch.zeros(()))

    def logits(self, states: torch.Tensor, actions: torch.Tensor, t: torch.Tensor | float | None = None,
               calibrated: bool = True) -> torch.Tensor:
        parts = [states, actions]
        if self.noisy:
            if t is None:
                raise ConfigError("a noisy-input classifier needs the diffusion time t")
            t = t if isinstance(t, torch.Tensor) else torch.full((actions.shape[0],), t, device=actions.device)
            parts.append(self.time_embed(t))
        out = self.body(torch.cat(parts, -1))
        return out / self.log_temperature.exp() if calibrated else out

    def log_prob(self, states: torch.Tensor, actions: torch.Tensor, labels: torch.Tensor,
                 t: torch.Tensor | float | None = None) -> torch.Tensor:
        """(N,) calibrated log p(y | s, a) of each row's label."""
        return F.log_softmax(self.logits(states, actions, t), -1).gather(-1, labels[:, None]).squeeze(-1)

    def grad_fn(self, states: torch.Tensor, labels: torch.Tensor):
        """(a_t, t) -> grad_a log p(y | s, a_t, t), as the samplers' guidance takes it (classifier guidance)."""

        def fn(a: torch.Tensor, t: float) -> torch.Tensor:
            with torch.inference_mode(False), torch.enable_grad():
                x = a.clone().requires_grad_(True)
                (g,) = torch.autograd.grad(self.log_prob(states.clone(), x, labels.clone(), t).sum(), x)
            return g

        return fn


def check_labels(labels: torch.Tensor, classes: int, rows: int, what: str) -> torch.Tensor:
    """Integer labels in [0, classes), one per row: anything else is one clear error before training."""
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.shape[0] != rows:
        count = labels.shape[0] if labels.dim() == 1 else f"an array of shape {tuple(labels.shape)} of"
        raise ConfigError(f"{what}: {count} labels for {rows} rows; give one label per row")
    if labels.is_floating_point():
        if not torch.isfinite(labels).all() or (labels != labels.round()).any():
            raise ConfigError(f"{what}: labels must be integer class indices, got non-integer values")
        labels = labels.long()
    seen = torch.unique(labels)
    if seen.numel() and (seen.min() < 0 or seen.max() >= classes):
        bad = [int(v) for v in seen if v < 0 or v >= classes]
        raise ConfigError(f"{what}: label(s) {bad} outside the control's classes 0..{classes - 1}")
    if seen.numel() < 2:
        raise ConfigError(f"{what}: the labels hold {seen.numel()} class(es); a control needs examples of at "
                          f"least two (check the labelling rule, e.g. the return-to-go quantile)")
    return labels


def split(n: int, holdout: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row indices for fitting, for the temperature and for measuring calibration (the last two halves
    of the `holdout` fraction)."""
    if not 0 < holdout < 1:
        raise ConfigError(f"the held-out fraction must be in (0, 1), got {holdout}")
    order = torch.randperm(n, generator=generator)
    held = max(2, int(round(n * holdout)))
    if n - held < 1:
        raise ConfigError(f"{n} labelled rows are too few to hold {holdout:.0%} out for calibration")
    return order[held:], order[: held // 2], order[held // 2 : held]


def train_classifier(clf: Classifier, states: torch.Tensor, actions: torch.Tensor, labels: torch.Tensor, *,
                     steps: int, batch: int, lr: float, generator: torch.Generator,
                     schedule: VPSchedule | None = None, stage: str = "classifier", progress: bool = False,
                     workdir: Path | None = None, hooks: TrainHooks | None = None, fingerprint: Any = None) -> dict:
    """Cross-entropy on minibatches (AdamW); a noisy classifier sees a_t = alpha_t a + sigma_t z at a random t."""
    if clf.noisy and schedule is None:
        raise ConfigError("a noisy-input classifier is trained on a diffusion schedule; pass `schedule`")
    opt = torch.optim.AdamW(clf.parameters(), lr=lr, weight_decay=1e-4)
    n = labels.shape[0]
    clf.log_temperature.zero_()

    def step(_: int) -> torch.Tensor:
        i = torch.randint(n, (batch,), device=labels.device, generator=generator)
        a, t = actions[i], None
        if clf.noisy:
            t = schedule.sample_time(batch, a.device, generator)
            a = schedule.diffuse(a, t, torch.randn(a.shape, device=a.device, generator=generator))
        return optimiser_step(opt, F.cross_entropy(clf.logits(states[i], a, t, calibrated=False), labels[i]))

    clf.train()
    record = run_steps(step, steps, stage, progress=progress, workdir=workdir, hooks=hooks, fingerprint=fingerprint,
                       state={"classifier": clf, "optimizer": opt, "generator": generator})
    clf.eval()
    return record


def _eval_inputs(clf: Classifier, states: torch.Tensor, actions: torch.Tensor, schedule: VPSchedule | None,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    if not clf.noisy:
        return actions, None
    t = schedule.sample_time(actions.shape[0], actions.device, generator)
    return schedule.diffuse(actions, t, torch.randn(actions.shape, device=actions.device, generator=generator)), t


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """log(1/T) minimising the NLL of logits / T (a 1-D convex problem in 1/T)."""
    log_inv = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([log_inv], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        with torch.enable_grad():
            loss = F.cross_entropy(logits * log_inv.exp(), labels)
            loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return float(log_inv.detach())


@torch.no_grad()
def calibrate(clf: Classifier, states: torch.Tensor, actions: torch.Tensor, labels: torch.Tensor,
              temperature_rows: torch.Tensor, measure_rows: torch.Tensor, generator: torch.Generator,
              schedule: VPSchedule | None = None) -> dict[str, float]:
    """Temperature scaling by two-fold cross-fitting over the whole holdout: each half's temperature is
    scored on the other half. When that cross-validated NLL beats the raw classifier's, T is fitted on the
    whole holdout; otherwise T = 1 (a temperature fitted on a few hundred points can be worse than none,
    and a wrong T acts like a wrong beta). NLL and ECE are the cross-fitted ones, so no point is scored
    by a temperature it helped fit; `temperature_rule` says which was kept. A noisy classifier is
    calibrated over random t."""
    rows = torch.cat([temperature_rows, measure_rows])  # only the held-out rows are scored
    a, t = _eval_inputs(clf, states[rows], actions[rows], schedule, generator)
    raw = clf.logits(states[rows], a, t, calibrated=False)
    y = labels[rows]
    first = torch.arange(len(temperature_rows), device=raw.device)
    second = torch.arange(len(temperature_rows), len(rows), device=raw.device)
    crossed = raw.clone()
    crossed[second] = raw[second] * math.exp(fit_temperature(raw[first], y[first]))
    crossed[first] = raw[first] * math.exp(fit_temperature(raw[second], y[second]))
    nll_raw, nll_crossed = float(F.cross_entropy(raw, y)), float(F.cross_entropy(crossed, y))
    fitted = nll_crossed < nll_raw
    clf.log_temperature.fill_(-fit_temperature(raw, y) if fitted else 0.0)
    ece_raw = expected_calibration_error(raw.softmax(-1), y)
    return {"temperature": float(clf.log_temperature.exp()), "temperature_rule": "fitted" if fitted else "T = 1",
            "nll_raw": nll_raw, "nll": nll_crossed if fitted else nll_raw,
            "ece_raw": ece_raw, "ece": expected_calibration_error(crossed.softmax(-1), y) if fitted else ece_raw,
            "accuracy": float((raw.argmax(-1) == y).float().mean()), "measured_on": int(rows.numel())}


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """Top-label ECE: sum over equal-width confidence bins of |accuracy - confidence| weighted by the bin's share."""
    confidence, predicted = probs.max(-1)
    correct = (predicted == labels).double()
    index = torch.clamp((confidence * bins).long(), max=bins - 1)
    gap = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, correct - confidence.double())
    return float(gap.abs().sum() / max(1, labels.numel()))


class ClassifierGuidance:
    """Classifier guidance for labels carried in extended states [s, y]: the sampler's energy gradient
    is grad_x sum_j log p_j(y_j | s, x_t, t) over the controls given (NULL: left out); at scale 1 it
    samples p_t(x | y) exactly when the noisy classifiers are exact (Dhariwal & Nichol 2021)."""

    def __init__(self, classifiers: list[Classifier]):
        if not all(c.noisy for c in classifiers):
            raise ConfigError("classifier guidance needs noisy-input classifiers (trained on a_t at time t)")
        self.classifiers = classifiers

    def grad_fn(self, extended: torch.Tensor):
        states, labels = split_labels(extended, len(self.classifiers))
        parts = [(clf.grad_fn(states, labels[:, j].clamp(min=0)), (labels[:, j] != NULL).unsqueeze(-1))
                 for j, clf in enumerate(self.classifiers)]
        return lambda a, t: sum(torch.where(given, fn(a, t), 0.0) for fn, given in parts)
