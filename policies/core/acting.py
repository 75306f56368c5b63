"""A lean path for guided acting: QGPO's evaluation case (a few states, 15 solver evaluations each).

At batch 10 an action costs little arithmetic but many small kernels, and most of those compute the same
thing on every call: a solver's time grid is fixed, so each evaluation's time embedding is too. This
path computes the time-only terms of all evaluations together and the states' conditioning once per call
(the conditioning of all evaluations in one batched matmul instead of one small product per evaluation), and
leaves only the action-dependent trunk and energy gradient inside the solver loop. Optionally ("compiled") the
whole solver loop of a deterministic sampler is compiled as one graph (`torch.compile`; CUDA graphs on a GPU):
the loop's 15 evaluations unrolled, the elementwise work fused, the per-kernel dispatch between the small matmuls
gone (a stochastic sampler, several actions per state or a batch too large to precompute compile the loop body
alone). Same run, under load, official sizes, batch 10: the whole loop 42.7 ms a call against the lean path's 62.6
(the body alone had given 1.05x); the compile takes a minute or more per batch size, once.

The solver itself is the plain one (`SamplerSpec.run`), so the numbers are those of
`DiffusionModel.sample` up to float rounding of the reordered sums (tests/test_acting.py bounds it).
"""

from __future__ import annotations

from typing import Callable

import torch

from policies.core.diffusion import DiffusionModel
from policies.core.networks import EnergyNet, ScoreNet
from policies.core.samplers import SamplerSpec
from policies.errors import ConfigError

ACTING_PATHS = ("plain", "lean", "compiled")
PRECOMPUTE_FLOATS = 1 << 24  # the all-evaluations conditioning buffer's limit (64 MiB): 256 states x 15 steps fit


def solver_times(sampler: SamplerSpec, model: DiffusionModel) -> list[float]:
    """The times at which `sampler` evaluates the noise predictor, in order (they do not depend on x)."""
    times: list[float] = []

    def probe(x: torch.Tensor, t: float) -> torch.Tensor:
        times.append(t)
        return torch.zeros_like(x)

    sampler.run(probe, torch.zeros(1, model.action_dim), model.schedule, generator=torch.Generator().manual_seed(0))
    return times


def _guided_step(net: ScoreNet, energy: EnergyNet | None):
    """eps of the guided score at one solver time, given that time's precomputed conditioning."""
    if energy is None:
        return lambda x, proj, offset, coef: net.trunk(x, proj)
    return lambda x, proj, offset, coef: net.trunk(x, proj) - coef * energy.action_grad_at(x, offset)


class GuidedActor:
    """Samples pi(a|s) ∝ mu(a|s) exp(scale f(a, s)) like `DiffusionModel.sample(states, 1, ...)`, faster at small
    batches. Built once per (model, energy, sampler, scale); it reads the weights at every call."""

    def __init__(self, model: DiffusionModel, energy: EnergyNet | None, sampler: SamplerSpec, scale: float,
                 path: str = "lean"):
        if path not in ACTING_PATHS[1:]:
            raise ConfigError(f"unknown acting path {path!r}; choose one of {', '.join(ACTING_PATHS)}")
        if not isinstance(model.net, ScoreNet):
            raise ConfigError(f"the lean acting path needs a ScoreNet noise network, not {type(model.net).__name__}")
        self.model, self.sampler = model, sampler
        self.energy = energy if scale != 0 else None
        net = model.net
        times = solver_times(sampler, model)
        self.index = {t: i for i, t in enumerate(times)}
        device = next(net.parameters()).device
        self.grid = torch.tensor(times, device=device)
        sigma = torch.tensor([model.schedule.alpha_sigma(t)[1] for t in times], device=device)
        self.sigma, self.coef = sigma, scale * sigma  # eps - scale * sigma_t * grad f
        step = _guided_step(net, self.energy)
        self.whole: Callable | None = None
        if path == "compiled":
            mode = "reduce-overhead" if device.type == "cuda" else None  # CUDA graphs where there are any
            self.whole = torch.compile(self._solve, dynamic=False, mode=mode) if not sampler.stochastic else None
            step = torch.compile(step, dynamic=False, mode=mode)
        self.step: Callable = step

    def _solve(self, x: torch.Tensor, proj: torch.Tensor, offset: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        """A deterministic sampler's whole loop on precomputed (T, B, .) conditioning: one graph when compiled."""
        index, step = self.index, _guided_step(self.model.net, self.energy)
        return self.sampler.run(lambda x, t: step(x, proj[index[t]], offset[index[t]], coef[index[t]]), x,
                                self.model.schedule).x

    @torch.inference_mode()
    def __call__(self, states: torch.Tensor, generator: torch.Generator | None = None, n: int = 1,
                 scales: torch.Tensor | None = None, blocks: int = 1) -> torch.Tensor:
        """`n` actions per state, (B, A) for n = 1 and (B, n, A) otherwise; the noise is drawn as
        `DiffusionModel.sample` draws it. The conditioning is computed once per state, not per action.

        `scales` (B,): a guidance scale per state instead of the actor's one (build the actor with a scale != 0).
        `blocks`: the states are that many equal blocks (e.g. one per guidance scale) that share their noise,
        each drawing what a call on that block alone would: one batched call replaces `blocks` calls."""
        net, grid, b = self.model.net, self.grid, states.shape[0]
        if b % blocks:
            raise ConfigError(f"{b} states do not split into {blocks} equal blocks")
        if blocks > 1 and self.sampler.stochastic:
            raise ConfigError(f"blocks share only the starting noise; {self.sampler.name} draws more on the way")
        # time's share of each evaluation (a few small products, recomputed so that trained weights are always
        # read), plus the states'; then the block inputs of all T evaluations in one product, (T, B, P), unless
        # that buffer would be large (big batches gain nothing from it and lose on memory traffic)
        mixed = net.mix_time(net.time_embed(grid))[:, None, :] + net.condition(states)
        width = sum(net.block_widths) + (self.energy.inp_time.out_features if self.energy is not None else 0)
        small = len(self.index) * b * width <= PRECOMPUTE_FLOATS
        proj = offset = net.projections(mixed) if small else None
        proj_at = proj.__getitem__ if small else lambda i: net.projections(mixed[i])
        offset_at, coef = proj_at, self.coef
        if self.energy is not None:
            time_offset, state_offset = self.energy.time_offset(grid, grid)[:, None, :], self.energy.condition(states)
            offset = time_offset + state_offset if small else None
            offset_at = offset.__getitem__ if small else lambda i: time_offset[i] + state_offset
            if scales is not None:
                coef = self.sigma[:, None, None] * scales.to(mixed)[None, :, None]  # (T, B, 1)
        index, step = self.index, self.step
        if n > 1:  # a state's n actions share its conditioning by broadcasting: x is viewed as (B, n, A)
            coef = coef.unsqueeze(2) if coef.dim() > 1 else coef

        def eps(x: torch.Tensor, t: float) -> torch.Tensor:
            i = index[t]
            p = proj_at(i)
            o = offset_at(i) if offset_at is not proj_at else p
            if n == 1:
                return step(x, p, o, coef[i])
            return step(x.view(b, n, -1), p.unsqueeze(1), o.unsqueeze(1), coef[i]).view(b * n, -1)

        x = torch.randn((b // blocks * n, self.model.action_dim), device=states.device, generator=generator)
        x = x.repeat(blocks, 1) if blocks > 1 else x
        if self.whole is not None and small and n == 1:
            return self.whole(x, proj, offset, coef)
        x = self.sampler.run(eps, x, self.model.schedule, generator=generator).x
        return x if n == 1 else x.view(b, n, -1)
