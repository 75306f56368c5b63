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


def _case(seeds: int, make: Callable[[int], nn.Module], parts: Callable[[nn.Module], list[nn.Sequential]],
          data: list[tuple[torch.Tensor, ...]], own_loss: Callable[..., torch.Tensor],
          stacked_loss: Callable[..., torch.Tensor], device: torch.device, lr: float) -> Case:
    """Seed n's own run (`make(n)`, its Adam, `own_loss(net, *data[n])`) beside all seeds stacked: each of the
    network's `parts` one `StackedMLP`, one Adam, `stacked_loss(stacks, *batches)` giving the seeds' losses (N,)
    (summed for the step, so each seed's gradient is its own loss's)."""
    singles = [make(n).to(device) for n in range(seeds)]
    opts = [torch.optim.Adam(net.parameters(), lr=lr) for net in singles]
    steps = [(lambda net=net, o=o, d=d: optimiser_step(o, own_loss(net, *d))) for net, o, d in zip(singles, opts, data)]
    stacks = [StackedMLP(group).to(device) for group in zip(*(parts(make(n)) for n in range(seeds)))]
    opt = torch.optim.Adam([p for stack in stacks for p in stack.parameters()], lr=lr)
    batches = [torch.stack(x) for x in zip(*data)]

    def stacked_step() -> torch.Tensor:
        loss = stacked_loss(stacks, *batches)
        optimiser_step(opt, loss.sum())
        return loss.detach()

    def seed_net(n: int) -> nn.Module:
        net = make(n).to(device)
        for stack, part in zip(stacks, parts(net)):
            stack.unstack(n, part)
        return net

    return Case(singles, steps, stacked_step, seed_net)


def _data(seed: int, seeds: int, shapes: Sequence[tuple[int, ...]], device: torch.device) -> list[tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(seed)
    return [tuple(torch.randn(*shape, generator=g).to(device) for shape in shapes) for _ in range(seeds)]


def q_regression(seeds: int, obs_dim: int, act_dim: int, device: torch.device = CPU, layers: int = 3,
                 lr: float = 3e-4) -> Case:
    """The critic stages' step (both twins regressed onto fixed targets, one Adam step) for `seeds` seeds, each
    with its own initialisation and batch. The single-seed steps are the algorithms' own code (TwinQ's loss)."""
    def twins_loss(stacks: list[StackedMLP], s: torch.Tensor, a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        sa = torch.cat([s, a], -1)  # per seed: the mean over its batch, as TwinQ.regression_loss
        return sum((q(sa).squeeze(-1) - y).pow(2).mean(-1) for q in stacks)

    return _case(seeds, lambda n: _twin_q(n, obs_dim, act_dim, layers), lambda q: [q.q1, q.q2],
                 _data(0, seeds, [(BATCH, obs_dim), (BATCH, act_dim), (BATCH,)], device),
                 lambda q, s, a, y: q.regression_loss(s, a, y), twins_loss, device, lr)


def bc_regression(seeds: int, obs_dim: int, act_dim: int, device: torch.device = CPU, layers: int = 2,
                  lr: float = 3e-4) -> Case:
    """BC's step (an MLP regressed onto actions) for `seeds` seeds, as `q_regression` (without the tanh head,
    which is elementwise)."""
    def net(n: int) -> nn.Sequential:
        torch.manual_seed(n)
        return mlp([obs_dim, *[HIDDEN] * layers, act_dim])

    return _case(seeds, net, lambda p: [p], _data(1, seeds, [(BATCH, obs_dim), (BATCH, act_dim)], device),
                 lambda p, s, a: (p(s) - a).pow(2).sum(-1).mean(),
                 lambda stacks, s, a: (stacks[0](s) - a).pow(2).sum(-1).mean(-1), device, lr)


CASES = {"q_step": q_regression, "bc_step": bc_regression}


def bitwise_equal(case: Case, steps: int = 3) -> bool:
    """Whether `steps` stacked steps give every seed the losses and parameters of its own run, bit for bit."""
    own = torch.stack([torch.stack([step() for step in case.steps]) for _ in range(steps)])
    together = torch.stack([case.stacked_step() for _ in range(steps)])
    return torch.equal(own, together) and all(
        torch.equal(a, b) for n, net in enumerate(case.nets) for a, b in zip(net.parameters(), case.seed_net(n).parameters()))


POINTMAZE = (4, 2)  # observation and action dims of the generated mazes: small inputs take other GEMM kernels
