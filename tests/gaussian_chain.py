"""A fine-tunable chain whose objective is known in closed form, for checking gradient estimators.

Data N(m, v) in one dimension; the noise predictor is the exact one plus, per chain time, an offset and a
slope in x: eps(x, t_k) = eps*(x, t_k) + o_k + c_k x. Every step is then linear-Gaussian,
x_{k+1} = A_k x_k + B_k + std_k z, so the law of each x_k, the reward's mean (for a linear reward) and every
step's expected KL to the pretrained chain are closed-form functions of (o, c). With c != 0 a step's KL
depends on x_k, and so on the earlier steps' choices: the case a state-free family cannot see.
"""

from __future__ import annotations

import torch
from torch import nn

from policies.algorithms.finetune import Chain, FinetunedPolicy
from policies.core.schedule import VPSchedule


class SlopedNoise(nn.Module):
    def __init__(self, m: float, v: float, schedule: VPSchedule, times: list[float]):
        super().__init__()
        self.m, self.v, self.schedule = m, v, schedule
        self.register_buffer("times", torch.tensor(times, dtype=torch.float32))
        self.offset = nn.Parameter(torch.zeros(len(times)))
        self.slope = nn.Parameter(torch.zeros(len(times)))

    def exact(self, t: float) -> tuple[float, float]:
        """eps*(x, t) = gain x + bias for N(m, v) data."""
        al, sg = self.schedule.alpha_sigma(float(t))
        den = al * al * self.v + sg * sg
        return sg / den, -sg * al * self.m / den

    def forward(self, x, t: float, states):
        gain, bias = self.exact(t)
        k = int((self.times - t).abs().argmin())
        return gain * x + bias + self.offset[k] + self.slope[k] * x


class SlopedModel(nn.Module):
    def __init__(self, m: float, v: float, chain: Chain):
        super().__init__()
        self.schedule, self.action_dim = VPSchedule(), 1
        self.net = SlopedNoise(m, v, self.schedule, chain.coefficients(self.schedule)[0][:-1])


def sloped_policy(chain: Chain, offsets: list[float], slopes: list[float], m: float = 0.5, v: float = 0.09
                  ) -> FinetunedPolicy:
    """A policy whose trainable copy starts away from the pretrained chain by the given offsets and slopes."""
    policy = FinetunedPolicy(SlopedModel(m, v, chain), chain)
    with torch.no_grad():
        policy.model.net.offset.copy_(torch.tensor(offsets))
        policy.model.net.slope.copy_(torch.tensor(slopes))
    return policy


def exact_terms(policy: FinetunedPolicy, offsets: torch.Tensor, slopes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(E[a], E[sum_k KL_k]) of the fine-tuned chain with the given (float64, differentiable) parameters,
    the KLs counted over the trained steps as `FinetunedPolicy` counts them."""
    net = policy.model.net
    ts, table = policy.chain.coefficients(net.schedule)
    mean, var = torch.zeros((), dtype=torch.float64), torch.ones((), dtype=torch.float64)
    kl = torch.zeros((), dtype=torch.float64)
    for k, (t, (a, b, std)) in enumerate(zip(ts[:-1], table.tolist())):
        gain, bias = net.exact(t)
        trained = k >= policy.first_trained
        o, c = (offsets[k], slopes[k]) if trained else (0.0, 0.0)
        if trained:  # E[(b (o + c x))^2] / (2 std^2) over x ~ N(mean, var)
            kl = kl + b * b * ((o + c * mean) ** 2 + c * c * var) / (2 * std * std)
        step, shift = a + b * (gain + c), b * (bias + o)
        mean, var = step * mean + shift, step * step * var + std * std
    return mean, kl


def exact_gradients(policy: FinetunedPolicy, objective) -> tuple[torch.Tensor, torch.Tensor]:
    """d objective(E[a], E[KL]) / d (offsets, slopes), in closed form (autograd through `exact_terms`)."""
    net = policy.model.net
    o = net.offset.detach().double().requires_grad_(True)
    c = net.slope.detach().double().requires_grad_(True)
    value = objective(*exact_terms(policy, o, c))
    return torch.autograd.grad(value, (o, c))
