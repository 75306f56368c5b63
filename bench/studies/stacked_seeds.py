"""Many seeds in one process: N seeds' small-batch stage stacked into one model (timed by `diffbench perf qgpo`).

The field trains seeds together by stacking their parameters (torch.func / JAX vmap) so that one kernel serves
all seeds. Here the stacked step is built so that every seed's numbers are bit for bit those of its own run:
the hidden layers are one batched product over the seed axis (`baddbmm`, whose per-seed slices run the same
GEMM as `nn.Linear`'s `addmm` at these shapes) and the output layer is one `addmm` per seed (a batched product
with a narrow output sums in another order). Adam is elementwise, so stacking its state changes nothing.
Not every BLAS keeps this: at PointMaze's narrow inputs the weight gradient of the first layer takes another
kernel under `bmm` than under `mm`, so bit-for-bit equality is measured per shape, not assumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from policies.core.networks import TwinQ, mlp
from policies.core.training import optimiser_step

SEEDS = 8
CPU = torch.device("cpu")
BATCH, HIDDEN = 256, 256  # the small-batch stages' batch and width (critic, energy, BC, TD3+BC, IQL)


class StackedMLP(nn.Module):
    """N `mlp`s (same sizes) as one module on inputs (N, B, d_in) -> (N, B, d_out)."""

    def __init__(self, nets: Sequence[nn.Sequential]):
        super().__init__()
        layers = [[m for m in net if isinstance(m, nn.Linear)] for net in nets]
        self.activation = next(type(m) for m in nets[0] if not isinstance(m, nn.Linear))()
        depth = len(layers[0])
        self.weights = nn.ParameterList(nn.Parameter(torch.stack([ls[i].weight.detach() for ls in layers]).clone())
                                        for i in range(depth))
        self.biases = nn.ParameterList(nn.Parameter(torch.stack([ls[i].bias.detach() for ls in layers]).clone())
                                       for i in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for w, b in zip(list(self.weights)[:-1], list(self.biases)[:-1]):
            h = self.activation(torch.baddbmm(b[:, None, :], h, w.transpose(1, 2)))
        w, b = self.weights[-1], self.biases[-1]
        return torch.stack([torch.addmm(b[n], h[n], w[n].t()) for n in range(h.shape[0])])

    def unstack(self, n: int, net: nn.Sequential) -> nn.Sequential:
        """Seed n's parameters written into `net` (an `mlp` of the same sizes)."""
        with torch.no_grad():
            for layer, w, b in zip([m for m in net if isinstance(m, nn.Linear)], self.weights, self.biases):
                layer.weight.copy_(w[n])
                layer.bias.copy_(b[n])
        return net


def _twin_q(seed: int, obs_dim: int, act_dim: int, layers: int) -> TwinQ:
    torch.manual_seed(seed)
    return TwinQ(act_dim, obs_dim, HIDDEN, layers)


@dataclass
class Case:
    """One stage's step for several seeds: each seed's own run, and all of them stacked."""

    nets: list[nn.Module]  # seed n's network of its own run
    steps: list[Callable[[], torch.Tensor]]  # seed n's own step; returns its loss
    stacked_step: Callable[[], torch.Tensor]  # every seed's step at once; returns the seeds' losses (N,)
    seed_net: Callable[[int], nn.Module]  # seed n's network read out of the stacked model


def q_regression(seeds: int, obs_dim: int, act_dim: int, device: torch.device = CPU, layers: int = 3,
                 lr: float = 3e-4) -> Case:
    """The critic stages' step (both twins regressed onto fixed targets, one Adam step) for `seeds` seeds, each
    with its own initialisation and batch. The single-seed steps are the algorithms' own code (TwinQ's loss).
    """
    g = torch.Generator().manual_seed(0)
    data = [tuple(x.to(device) for x in (torch.randn(BATCH, obs_dim, generator=g), torch.randn(BATCH, act_dim, generator=g),
                                          torch.randn(BATCH, generator=g))) for _ in range(seeds)]
    singles = [_twin_q(n, obs_dim, act_dim, layers).to(device) for n in range(seeds)]
    opts = [torch.optim.Adam(q.parameters(), lr=lr) for q in singles]
    steps = [(lambda q=q, o=o, d=d: optimiser_step(o, q.regression_loss(*d))) for q, o, d in zip(singles, opts, data)]

    stacked = [_twin_q(n, obs_dim, act_dim, layers) for n in range(seeds)]
    q1, q2 = StackedMLP([q.q1 for q in stacked]).to(device), StackedMLP([q.q2 for q in stacked]).to(device)
    opt = torch.optim.Adam([*q1.parameters(), *q2.parameters()], lr=lr)
    sa = torch.stack([torch.cat([s, a], -1) for s, a, _ in data])
    y = torch.stack([r for _, _, r in data])

    def stacked_step() -> torch.Tensor:
        # per seed: the mean over its batch, as TwinQ.regression_loss; the seeds' losses summed, so each seed's
        # gradient is its own loss's
        loss = (q1(sa).squeeze(-1) - y).pow(2).mean(-1) + (q2(sa).squeeze(-1) - y).pow(2).mean(-1)
        optimiser_step(opt, loss.sum())
        return loss.detach()

    def seed_twins(n: int) -> TwinQ:
        twin = TwinQ(act_dim, obs_dim, HIDDEN, layers).to(device)
        q1.unstack(n, twin.q1), q2.unstack(n, twin.q2)
        return twin

    return Case(singles, steps, stacked_step, seed_twins)


def bc_regression(seeds: int, obs_dim: int, act_dim: int, device: torch.device = CPU, layers: int = 2,
                  lr: float = 3e-4) -> Case:
    """BC's step (an MLP regressed onto actions) for `seeds` seeds, as `q_regression` (without the tanh head,
    which is elementwise)."""
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(BATCH, obs_dim, generator=g).to(device), torch.randn(BATCH, act_dim, generator=g).to(device))
            for _ in range(seeds)]

    def net(n: int) -> nn.Sequential:
        torch.manual_seed(n)
        return mlp([obs_dim, *[HIDDEN] * layers, act_dim]).to(device)

    singles = [net(n) for n in range(seeds)]
    opts = [torch.optim.Adam(p.parameters(), lr=lr) for p in singles]
    steps = [(lambda p=p, o=o, d=d: optimiser_step(o, (p(d[0]) - d[1]).pow(2).sum(-1).mean()))
             for p, o, d in zip(singles, opts, data)]
    stacked = StackedMLP([net(n) for n in range(seeds)]).to(device)
    opt = torch.optim.Adam(stacked.parameters(), lr=lr)
    s, a = torch.stack([d[0] for d in data]), torch.stack([d[1] for d in data])

    def stacked_step() -> torch.Tensor:
        loss = (stacked(s) - a).pow(2).sum(-1).mean(-1)
        optimiser_step(opt, loss.sum())
        return loss.detach()

    return Case(singles, steps, stacked_step, lambda n: stacked.unstack(n, net(n)))


CASES = {"q_step": q_regression, "bc_step": bc_regression}


def bitwise_equal(case: Case, steps: int = 3) -> bool:
    """Whether `steps` stacked steps give every seed the losses and parameters of its own run, bit for bit."""
    own = torch.stack([torch.stack([step() for step in case.steps]) for _ in range(steps)])
    together = torch.stack([case.stacked_step() for _ in range(steps)])
    return torch.equal(own, together) and all(
        torch.equal(a, b) for n, net in enumerate(case.nets) for a, b in zip(net.parameters(), case.seed_net(n).parameters()))


POINTMAZE = (4, 2)  # observation and action dims of the generated mazes: small inputs take other GEMM kernels
