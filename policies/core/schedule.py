"""The VP-SDE noise schedule with linear beta(t), as in score-SDE, CEP and QGPO.

x_t = alpha_t x_0 + sigma_t eps, with log alpha_t = -(beta_max - beta_min) t^2 / 4 - beta_min t / 2
and sigma_t = sqrt(1 - alpha_t^2). Every sampler works in these continuous times t in (0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

T_MIN = 1e-3  # smallest training / sampling time: below it sigma_t is too small to learn a score


@dataclass(frozen=True)
class VPSchedule:
    beta_min: float = 0.1
    beta_max: float = 20.0

    def log_alpha(self, t: torch.Tensor | float):
        if isinstance(t, torch.Tensor):
            return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min
        return -0.25 * t * t * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def alpha_sigma(self, t: torch.Tensor | float):
        """(alpha_t, sigma_t), tensors for tensor t and floats for float t (solver coefficients)."""
        la = self.log_alpha(t)
        if isinstance(t, torch.Tensor):
            return la.exp(), (-torch.expm1(2 * la)).sqrt()
        return math.exp(la), math.sqrt(-math.expm1(2 * la))

    def lam(self, t: float) -> float:
        """Half log-SNR, lambda_t = log(alpha_t / sigma_t): DPM-Solver's integration variable."""
        la = self.log_alpha(t)
        return la - 0.5 * math.log(-math.expm1(2 * la))

    def beta(self, t: float) -> float:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def sample_time(self, n: int, device: torch.device | str, generator: torch.Generator | None = None) -> torch.Tensor:
        """t ~ U(T_MIN, 1), the denoising-score-matching time distribution."""
        return torch.rand(n, device=device, generator=generator) * (1.0 - T_MIN) + T_MIN

    def diffuse(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        alpha, sigma = self.alpha_sigma(t)
        shape = t.shape + (1,) * (x0.dim() - t.dim())
        return alpha.reshape(shape) * x0 + sigma.reshape(shape) * noise


def time_grid(steps: int, t_start: float = 1.0, t_end: float = T_MIN) -> list[float]:
    """Uniform times from t_start down to t_end (DPM-Solver's 'time_uniform' skip type)."""
    return [t_start + (t_end - t_start) * i / steps for i in range(steps + 1)]
