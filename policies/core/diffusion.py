"""A state-conditioned diffusion model of actions: denoising score matching and batched sampling.

The behaviour model of QGPO, and the pretrained model that DDPO, CTRL and DxMI fine-tune.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, Sequence

import torch
from torch import nn

from policies.core.networks import ScoreNet
from policies.core.training import TrainHooks, optimiser_step, run_steps
from policies.core.samplers import GradFn, SampleResult, SamplerSpec, guided
from policies.core.schedule import VPSchedule


class Guidance(Protocol):
    """Anything that gives grad_a f(a_t, s, t) for a batch of states (e.g. `EnergyNet`)."""

    def grad_fn(self, states: torch.Tensor) -> GradFn: ...


LR_SCHEDULES = ("constant", "cosine")


def fit_behaviour(model: "DiffusionModel", states: torch.Tensor, actions: torch.Tensor, *, steps: int, batch: int,
                  lr: float, generator: torch.Generator, progress: bool = False, stage: str = "behaviour",
                  workdir: Path | None = None, hooks: TrainHooks | None = None, fingerprint: Any = None,
                  lr_schedule: str = "constant") -> dict:
    """Behaviour cloning by the model's own loss on random minibatches: denoising score matching here, flow matching
    for a `FlowModel` (any model with `loss(actions, states, generator)`). Adam; `lr_schedule` "cosine": the rate
    decays to 0 over `steps`."""
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr_schedule {lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1)) if lr_schedule == "cosine" else None
    n = actions.shape[0]

    def step(_: int) -> torch.Tensor:
        i = torch.randint(n, (batch,), device=actions.device, generator=generator)
        loss = optimiser_step(opt, model.loss(actions[i], states[i], generator))
        if decay is not None:
            decay.step()
        return loss

    model.train()
    state = {"model": model, "optimizer": opt, "generator": generator} | ({"decay": decay} if decay else {})
    return run_steps(step, steps, stage, progress=progress, workdir=workdir, hooks=hooks, fingerprint=fingerprint,
                     state=state)


class DiffusionModel(nn.Module):
    def __init__(self, action_dim: int, state_dim: int, widths: Sequence[int] = (512, 256, 128),
                 schedule: VPSchedule = VPSchedule(), net: nn.Module | None = None):
        """`net` (eps(x, t, states), with `condition`): another noise network than a fresh ScoreNet."""
        super().__init__()
        self.action_dim, self.state_dim, self.schedule = action_dim, state_dim, schedule
        self.net = net if net is not None else ScoreNet(action_dim, state_dim, widths)

    def loss(self, actions: torch.Tensor, states: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Denoising score matching: E_{t, z} || eps_theta(alpha_t a + sigma_t z, t, s) - z ||^2."""
        t = self.schedule.sample_time(actions.shape[0], actions.device, generator)
        z = torch.randn(actions.shape, device=actions.device, generator=generator)
        eps = self.net(self.schedule.diffuse(actions, t, z), t, states)
        return (eps - z).pow(2).sum(-1).mean()

    def noise_fn(self, states: torch.Tensor):
        cond = self.net.condition(states)
        return lambda x, t: self.net.eps(x, t, cond)

    @torch.inference_mode()
    def sample(self, states: torch.Tensor, n: int = 1, sampler: SamplerSpec = SamplerSpec(),
               guidance: Guidance | None = None, scale: float = 0.0, generator: torch.Generator | None = None,
               record: bool = False) -> SampleResult:
        """`n` actions for each of B states in one batched solve; result.x has shape (B, n, A)."""
        rep = states.repeat_interleave(n, 0) if n > 1 else states
        grad = guidance.grad_fn(rep) if guidance is not None and scale != 0 else None
        eps = guided(self.noise_fn(rep), grad, scale, self.schedule)
        x = torch.randn((rep.shape[0], self.action_dim), device=states.device, generator=generator)
        out = sampler.run(eps, x, self.schedule, generator=generator, record=record)
        out.x = out.x.reshape(states.shape[0], n, self.action_dim)
        return out
