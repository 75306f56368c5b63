"""DDPM on a few discrete noise levels: the chains of Diffusion-QL's and IDQL's official code.

Both train a noise network on T (5) levels i = 0 .. T-1 with the VP betas
    beta_i = 1 - exp(-b_min / T - (b_max - b_min) (2i + 1) / (2 T^2))                          (`vp_betas`)
(alpha-bar_i is then the continuous VP schedule's alpha((i + 1) / T)^2), and act by ancestral steps from
i = T - 1 down to 0. They bound a step differently, and each chain here is one of them, step for step:
  "posterior" (Diffusion-QL, agents/diffusion.py):  x0 = (x_i - sqrt(1 - abar_i) eps) / sqrt(abar_i), clamped to the
      action box at every step, then x_{i-1} ~ q(x_{i-1} | x_i, x0): the posterior's mean and variance
  "clipped" (IDQL, networks/diffusion.py):  x_{i-1} = (x_i - beta_i / sqrt(1 - abar_i) eps) / sqrt(alpha_i)
      + sqrt(beta_i) z, then x_{i-1} clipped to the box at every step
and both clip the final action. The chain is differentiable (Diffusion-QL's Q loss backpropagates through it,
clamps included, as the official code's in-place clamp does).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

CHAINS = ("posterior", "clipped")


def vp_betas(levels: int, beta_min: float = 0.1, beta_max: float = 10.0) -> torch.Tensor:
    i = torch.arange(levels, dtype=torch.float64)
    return 1 - torch.exp(-beta_min / levels - 0.5 * (beta_max - beta_min) * (2 * i + 1) / levels ** 2)


class DiscreteDiffusion(nn.Module):
    """A state-conditioned noise network eps(x_i, i, s) on `levels` discrete noise levels, with its schedule.

    `net` has `condition(states)` and `eps(x, level, cond)`, the level a float tensor (B,) or a float."""

    def __init__(self, net: nn.Module, action_dim: int, levels: int = 5, beta_max: float = 10.0):
        super().__init__()
        self.net, self.action_dim, self.levels = net, action_dim, levels
        betas = vp_betas(levels, beta_max=beta_max)
        alphas = 1 - betas
        abar = torch.cumprod(alphas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=abar.dtype), abar[:-1]])
        table = {"betas": betas, "alphas": alphas, "abar": abar,
                 "posterior_var": betas * (1 - abar_prev) / (1 - abar),
                 "posterior_c0": betas * abar_prev.sqrt() / (1 - abar),
                 "posterior_ct": (1 - abar_prev) * alphas.sqrt() / (1 - abar)}
        for name, values in table.items():  # buffers: they follow the module to its device and into checkpoints
            self.register_buffer(name, values.float())

    def loss(self, actions: torch.Tensor, states: torch.Tensor, generator: torch.Generator | None = None,
             reduce: str = "sum") -> torch.Tensor:
        """E_{i, z} of ||eps(sqrt(abar_i) a + sqrt(1 - abar_i) z, i, s) - z||^2, summed over action dimensions
        (IDQL's) or averaged over them ("mean": Diffusion-QL's MSE, which its eta is scaled against)."""
        x, i, z = self.perturb(actions, generator)
        err = self.net.eps(x, i.float(), self.net.condition(states)) - z
        return err.pow(2).sum(-1).mean() if reduce == "sum" else err.pow(2).mean()

    def perturb(self, actions: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_i = sqrt(abar_i) a + sqrt(1 - abar_i) z, the level i ~ U{0..T-1}, the noise z) for each action."""
        i = torch.randint(self.levels, (actions.shape[0],), device=actions.device, generator=generator)
        z = torch.randn(actions.shape, device=actions.device, generator=generator)
        abar = self.abar[i][:, None]
        return abar.sqrt() * actions + (1 - abar).sqrt() * z, i, z

    def sample(self, states: torch.Tensor, low: torch.Tensor, high: torch.Tensor, chain: str,
               generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """One action per state by the named chain (differentiable unless called under no_grad)."""
        eps = noise_fn(self.net, states)
        x = torch.randn((states.shape[0], self.action_dim), device=states.device, generator=generator)
        step = {"posterior": posterior_step, "clipped": clipped_step}[chain]
        for i in reversed(range(self.levels)):
            z = torch.randn(x.shape, device=x.device, generator=generator) * temperature if i > 0 else None
            x = step(self, x, i, eps(x, i), z, low, high)
        return torch.maximum(torch.minimum(x, high), low)


def noise_fn(net: nn.Module, states: torch.Tensor) -> Callable[[torch.Tensor, int], torch.Tensor]:
    cond = net.condition(states)
    return lambda x, i: net.eps(x, torch.full((x.shape[0],), float(i), device=x.device), cond)


def posterior_step(m: DiscreteDiffusion, x: torch.Tensor, i: int, eps: torch.Tensor, z: torch.Tensor | None,
                   low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Diffusion-QL's: the clamped x0 estimate, then a draw from q(x_{i-1} | x_i, x0)."""
    x0 = (x - (1 - m.abar[i]).sqrt() * eps) / m.abar[i].sqrt()
    x0 = torch.maximum(torch.minimum(x0, high), low)
    mean = m.posterior_c0[i] * x0 + m.posterior_ct[i] * x
    return mean if z is None else mean + m.posterior_var[i].clamp(min=1e-20).sqrt() * z


def clipped_step(m: DiscreteDiffusion, x: torch.Tensor, i: int, eps: torch.Tensor, z: torch.Tensor | None,
                 low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """IDQL's: the DDPM mean with variance beta_i, then x clipped to the box."""
    x = (x - m.betas[i] / (1 - m.abar[i]).sqrt() * eps) / m.alphas[i].sqrt()
    if z is not None:
        x = x + m.betas[i].sqrt() * z
    return torch.maximum(torch.minimum(x, high), low)
