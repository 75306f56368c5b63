"""Samplers of the reverse diffusion, as small functions over tensors (k-diffusion style).

Every sampler takes a noise predictor `eps_fn(x, t)` (t a float shared by the batch), the noise
x_T, a `VPSchedule` and its own arguments, and returns a `SampleResult`. Guidance is not a flag
here: `guided()` wraps an `eps_fn` with an energy gradient, so every sampler can be guided.

- `dpm_solver`: DPM-Solver in data-prediction form (DPM-Solver++, Lu et al. 2022), orders 1-3,
  'singlestep' (DPM-Solver-fast, QGPO's choice) or 'multistep'. Deterministic.
- `ddim`: DDIM with eta; eta > 0 makes every step a Gaussian transition with a log-probability.
- `euler_maruyama`: the reverse VP-SDE; every step but the last is a Gaussian transition.
The Gaussian transitions are exposed (`ddim_transition`, `sde_transition`) so that fine-tuning
(DDPO, DxMI) can re-score a recorded trajectory under updated parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from policies.errors import ConfigError
from policies.core.schedule import T_MIN, VPSchedule, time_grid

NoiseFn = Callable[[torch.Tensor, float], torch.Tensor]
GradFn = Callable[[torch.Tensor, float], torch.Tensor]


@dataclass
class SampleResult:
    x: torch.Tensor
    nfe: int  # noise-predictor evaluations per sample
    times: list[float] = field(default_factory=list)  # times of the recorded states, t_start first
    trajectory: list[torch.Tensor] | None = None  # states at `times` (record=True)
    log_probs: torch.Tensor | None = None  # (stochastic steps, N): log-density of each stochastic transition


def guided(eps_fn: NoiseFn, grad_fn: GradFn | None, scale: float, schedule: VPSchedule) -> NoiseFn:
    """Noise of the guided score: score + scale * grad f  <=>  eps - scale * sigma_t * grad f."""
    if grad_fn is None or scale == 0:
        return eps_fn

    def fn(x: torch.Tensor, t: float) -> torch.Tensor:
        return torch.add(eps_fn(x, t), grad_fn(x, t), alpha=-scale * schedule.alpha_sigma(t)[1])

    return fn


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    d = x.shape[-1]
    return -0.5 * ((x - mean) / std).pow(2).sum(-1) - d * (math.log(std) + 0.5 * math.log(2 * math.pi))


# ---------------------------------------------------------------- DPM-Solver (data prediction)

def _data_fn(eps_fn: NoiseFn, schedule: VPSchedule):
    def x0(x: torch.Tensor, t: float) -> torch.Tensor:
        alpha, sigma = schedule.alpha_sigma(t)
        return eps_fn(x, t).mul(-sigma / alpha).add_(x, alpha=1.0 / alpha)

    return x0


def _singlestep_orders(steps: int, order: int) -> list[int]:
    """How DPM-Solver-fast spends `steps` evaluations on steps of order <= `order`.

    As the DPM-Solver release QGPO ships (CEP's `dpm_solver_pytorch.py`): an even budget at order 2
    ends with two first-order steps, [2]*(steps/2 - 1) + [1, 1], not [2]*(steps/2) as later
    releases do, so an even step count solves the ODE on the same grid the official code does."""
    if order == 1:
        return [1] * steps
    if order == 2:
        return [2] * (steps // 2 - 1) + [1, 1] if steps % 2 == 0 else [2] * (steps // 2) + [1]
    k = steps // 3 + 1
    tail = {0: [2, 1], 1: [1], 2: [2]}[steps % 3]
    return [3] * (k - len(tail) if steps % 3 == 0 else k - 1) + tail


def dpm_solver(eps_fn: NoiseFn, x: torch.Tensor, schedule: VPSchedule, *, steps: int = 15, order: int = 2,
               method: str = "singlestep", t_end: float = T_MIN, record: bool = False) -> SampleResult:
    """DPM-Solver++ from t=1 to t_end with `steps` evaluations on a time-uniform grid."""
    m = _data_fn(eps_fn, schedule)
    ts = time_grid(steps, 1.0, t_end)
    lam = [schedule.lam(t) for t in ts]
    a = [schedule.alpha_sigma(t) for t in ts]  # (alpha, sigma) per grid time
    visited, traj = [ts[0]], [x] if record else None

    def keep(i: int, x: torch.Tensor) -> None:
        visited.append(ts[i])
        if record:
            traj.append(x)

    if method == "singlestep":
        i = 0
        for k in _singlestep_orders(steps, order):
            j = i + k
            h = lam[j] - lam[i]
            (al_t, sg_t), sg_s = a[j], a[i][1]
            phi1 = math.expm1(-h)
            ms = m(x, ts[i])
            if k == 1:  # x_t = (sigma_t/sigma_s) x - alpha_t (e^-h - 1) x0_s
                x = x.mul(sg_t / sg_s).add_(ms, alpha=-al_t * phi1)
            elif k == 2:  # DPM-Solver++(2S)
                r1 = (lam[i + 1] - lam[i]) / h
                al1, sg1 = a[i + 1]
                x1 = x.mul(sg1 / sg_s).add_(ms, alpha=-al1 * math.expm1(-r1 * h))
                m1 = m(x1, ts[i + 1])
                c = 0.5 / r1
                x = x.mul(sg_t / sg_s).add_(ms, alpha=-al_t * phi1 * (1 - c)).add_(m1, alpha=-al_t * phi1 * c)
            else:  # singlestep third order, 'dpm_solver' variant
                r1, r2 = (lam[i + 1] - lam[i]) / h, (lam[i + 2] - lam[i]) / h
                (al1, sg1), (al2, sg2) = a[i + 1], a[i + 2]
                phi22 = math.expm1(-r2 * h) / (r2 * h) + 1
                phi2 = phi1 / h + 1
                x1 = x.mul(sg1 / sg_s).add_(ms, alpha=-al1 * math.expm1(-r1 * h))
                m1 = m(x1, ts[i + 1])
                x2 = x.mul(sg2 / sg_s).add_(ms, alpha=-al2 * math.expm1(-r2 * h)).add_(m1 - ms, alpha=r2 / r1 * al2 * phi22)
                m2 = m(x2, ts[i + 2])
                x = x.mul(sg_t / sg_s).add_(ms, alpha=-al_t * phi1).add_(m2 - ms, alpha=al_t * phi2 / r2)
            i = j
            keep(i, x)
        return SampleResult(x, steps, visited, traj)

    if method != "multistep":
        raise ConfigError(f"unknown DPM-Solver method {method!r}; use 'singlestep' or 'multistep'")
    hist: list[torch.Tensor] = [m(x, ts[0])]  # data predictions at the previous grid times
    for i in range(1, steps + 1):
        k = min(order, i)
        h = lam[i] - lam[i - 1]
        (al_t, sg_t), sg_s = a[i], a[i - 1][1]
        phi1 = math.expm1(-h)
        x = x.mul(sg_t / sg_s).add_(hist[-1], alpha=-al_t * phi1)
        if k >= 2:
            r0 = (lam[i - 1] - lam[i - 2]) / h
            d1_0 = (hist[-1] - hist[-2]) / r0
            if k == 2:
                x = x.add_(d1_0, alpha=-0.5 * al_t * phi1)
            else:
                r1 = (lam[i - 2] - lam[i - 3]) / h
                d1_1 = (hist[-2] - hist[-3]) / r1
                d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi2 = phi1 / h + 1
                phi3 = phi2 / h - 0.5
                x = x.add_(d1, alpha=al_t * phi2).add_(d2, alpha=-al_t * phi3)
        keep(i, x)
        if i < steps:  # the last evaluation would go unused
            hist = (hist + [m(x, ts[i])])[-order:]
    return SampleResult(x, steps, visited, traj)


# ---------------------------------------------------------------- stochastic samplers

def ddim_transition(eps: torch.Tensor, x: torch.Tensor, t: float, s: float, schedule: VPSchedule, eta: float) -> tuple[torch.Tensor, float]:
    """Mean and std of the DDIM step x_t -> x_s (Song et al. 2021, eq. 12), given eps(x_t, t)."""
    (al_t, sg_t), (al_s, sg_s) = schedule.alpha_sigma(t), schedule.alpha_sigma(s)
    std = eta * (sg_s / sg_t) * math.sqrt(max(0.0, 1 - (al_t / al_s) ** 2))
    x0 = (x - sg_t * eps) / al_t
    return al_s * x0 + math.sqrt(max(0.0, sg_s**2 - std**2)) * eps, std


def sde_transition(eps: torch.Tensor, x: torch.Tensor, t: float, s: float, schedule: VPSchedule) -> tuple[torch.Tensor, float]:
    """Euler-Maruyama step of the reverse VP-SDE dx = [-beta/2 x - beta score] dt + sqrt(beta) dw, t -> s < t."""
    beta, dt = schedule.beta(t), t - s
    score = eps / -schedule.alpha_sigma(t)[1]
    return x + (0.5 * beta * dt) * x + (beta * dt) * score, math.sqrt(beta * dt)


def _stochastic(step, eps_fn: NoiseFn, x: torch.Tensor, ts: list[float], generator, record: bool, noisy_last: bool) -> SampleResult:
    traj, logps = ([x] if record else None), []
    for i in range(len(ts) - 1):
        mean, std = step(eps_fn(x, ts[i]), x, ts[i], ts[i + 1])
        if std > 0 and (noisy_last or i < len(ts) - 2):
            x = mean + std * torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)
            if record:
                logps.append(gaussian_log_prob(x, mean, std))
        else:
            x = mean
        if record:
            traj.append(x)
    log_probs = torch.stack(logps) if record and logps else None
    return SampleResult(x, len(ts) - 1, ts, traj, log_probs)


def ddim(eps_fn: NoiseFn, x: torch.Tensor, schedule: VPSchedule, *, steps: int = 15, eta: float = 0.0,
         t_end: float = T_MIN, generator: torch.Generator | None = None, record: bool = False) -> SampleResult:
    step = lambda e, x, t, s: ddim_transition(e, x, t, s, schedule, eta)  # noqa: E731
    return _stochastic(step, eps_fn, x, time_grid(steps, 1.0, t_end), generator, record, noisy_last=True)


def euler_maruyama(eps_fn: NoiseFn, x: torch.Tensor, schedule: VPSchedule, *, steps: int = 100,
                   t_end: float = T_MIN, generator: torch.Generator | None = None, record: bool = False) -> SampleResult:
    """The last step returns its mean (no noise is added at t_end), as is usual for SDE samplers."""
    step = lambda e, x, t, s: sde_transition(e, x, t, s, schedule)  # noqa: E731
    return _stochastic(step, eps_fn, x, time_grid(steps, 1.0, t_end), generator, record, noisy_last=False)


# ---------------------------------------------------------------- configuration

SAMPLERS = ("dpm_solver", "ddim", "sde")


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler by name with its settings; the defaults are QGPO's (DPM-Solver-2 fast, 15 steps, t_end 1e-3)."""

    name: str = "dpm_solver"
    steps: int = 15
    order: int = 2
    method: str = "singlestep"
    eta: float = 0.0
    t_end: float = T_MIN

    def __post_init__(self) -> None:
        if self.name not in SAMPLERS:
            raise ConfigError(f"unknown sampler {self.name!r}; choose one of {', '.join(SAMPLERS)}")
        if self.steps < 1:
            raise ConfigError(f"sampler steps must be >= 1, got {self.steps}")
        if self.order not in (1, 2, 3):
            raise ConfigError(f"DPM-Solver order must be 1, 2 or 3, got {self.order}")
        if self.method not in ("singlestep", "multistep"):
            raise ConfigError(f"unknown DPM-Solver method {self.method!r}; use 'singlestep' or 'multistep'")
        if self.eta < 0:
            raise ConfigError(f"DDIM eta must be >= 0, got {self.eta}")
        if not 0 < self.t_end < 1:
            raise ConfigError(f"t_end must be in (0, 1), got {self.t_end}")

    @property
    def stochastic(self) -> bool:
        """Whether the sampler draws noise after the starting x_T (DDIM with eta > 0, the SDE)."""
        return self.name == "sde" or (self.name == "ddim" and self.eta > 0)

    def run(self, eps_fn: NoiseFn, x: torch.Tensor, schedule: VPSchedule, generator: torch.Generator | None = None,
            record: bool = False) -> SampleResult:
        if self.name == "dpm_solver":
            return dpm_solver(eps_fn, x, schedule, steps=self.steps, order=self.order, method=self.method,
                              t_end=self.t_end, record=record)
        if self.name == "ddim":
            return ddim(eps_fn, x, schedule, steps=self.steps, eta=self.eta, t_end=self.t_end, generator=generator, record=record)
        return euler_maruyama(eps_fn, x, schedule, steps=self.steps, t_end=self.t_end, generator=generator, record=record)
