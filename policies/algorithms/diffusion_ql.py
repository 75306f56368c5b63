"""Diffusion-QL (Wang, Hunt & Zhou, ICLR 2023, "Diffusion Policies as an Expressive Policy Class for
Offline RL"): a diffusion policy trained by behaviour cloning plus Q-learning through its sampler.

Per step, one batch (s, a, r, s', d), as the official code (agents/ql_diffusion.py) orders it:
  critic  a' ~ pi_ema(.|s') (max-Q backup: the max over 10 draws, per twin), y = r + gamma (1 - d) min_i Q'_i(s', a')
          min  (Q_1(s, a) - y)^2 + (Q_2(s, a) - y)^2                 (gradient norm clipped)
  actor   a_new = the 5-step DDPM chain of pi_theta from noise, differentiated end to end
          min  L_bc(theta) - eta * Q_k(s, a_new).mean() / |Q_other(s, a_new)|.mean()   (k a fair coin per step)
  targets Polyak averaging of the critics; an EMA of the actor every 5 steps after the first 1000
  rates   both learning rates decay by a cosine to 0 over the run (the official locomotion runs' --lr_decay,
          stepped per epoch of 1000 there, per step here)
  acting  50 draws of pi_theta, one picked with probability ∝ exp(min_i Q'_i(s, a))
The official network and chain, kept at every preset: the noise network is its 3x256 Mish MLP on
[a_i, emb(i), s] (`DQLNoiseNet`), trained on the 5 discrete VP levels; the chain clamps its x0 estimate to the
action box at every step, inside the Q loss's differentiable chain too (`policies.core.ddpm`, "posterior");
the critic is 3x256 Mish. L_bc is averaged over action dimensions, as the official loss is, so that eta keeps
its meaning. With eta = 0 the actor trains exactly as a diffusion BC on the same batches (tested).
Where this differs: the rewards follow the suite's protocol (the official code leaves locomotion rewards as
they are; its eta is scaled by |Q|, so the transform changes little), and gn is 5, the median of the official
per-dataset table (1-9), at every locomotion dataset.
"""

from __future__ import annotations

import copy
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from policies import config as cfg_tools
from policies.algorithms.staged import OneStageAlgorithm
from torch import nn

from policies.core.ddpm import DiscreteDiffusion
from policies.core.fqe import CriticSpec
from policies.core.networks import DQLNoiseNet, Mish, TwinQ
from policies.core.selection import select
from policies.core.training import TrainHooks, optimiser_step, polyak_update, run_steps, stage_generator

BACKUP_DRAWS = 10  # the max-Q backup's draws per next state (the official code's)


@dataclass(frozen=True)
class DiffusionQLConfig(cfg_tools.Config):
    """Defaults: the official locomotion settings (main.py's table: eta 1; gn varies 1-9 by dataset, 5 is its
    median); AntMaze: `domain_overrides`."""

    hidden: int = 256  # the noise network's Mish MLP
    layers: int = 3
    q_hidden: int = 256
    q_layers: int = 3
    steps: int = 2_000_000  # 2000 epochs of 1000 steps
    batch: int = 256
    lr: float = 3e-4
    critic_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    eta: float = 1.0
    grad_norm: float = 5.0  # 0: no clipping
    lr_decay: bool = True  # cosine to 0 over `steps`, both learning rates
    max_q_backup: bool = False
    ema_decay: float = 0.995
    ema_start: int = 1000
    ema_every: int = 5
    diffusion_steps: int = 5
    beta_max: float = 10.0
    candidates: int = 50
    temperature: float = 1.0
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        cfg_tools.check_bounds(self, "diffusion_ql", at_least_one=("hidden", "layers", "q_hidden", "q_layers", "batch",
                                                                   "ema_every", "diffusion_steps", "candidates"),
                               non_negative=("steps", "ema_start"), positive=("lr", "critic_lr", "beta_max"),
                               finite_non_negative=("eta", "grad_norm", "temperature"),
                               unit_interval=("gamma", "tau", "ema_decay"))


PRESETS = {"paper": DiffusionQLConfig(),
           "cpu": DiffusionQLConfig(steps=10_000),
           "quick": DiffusionQLConfig(steps=5_000),
           "tiny": DiffusionQLConfig(hidden=32, q_hidden=32, steps=40, batch=32, ema_start=10, candidates=4)}


class DiffusionActorCritic(OneStageAlgorithm):
    """Diffusion-QL's shape, which DAC shares: a `DiscreteDiffusion` actor sampled by the posterior chain, a critic
    with a Polyak target, and acting by a pick among `candidates` draws (`choose`)."""

    def sample(self, model: DiscreteDiffusion, states: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The official chain from noise (x0 clamped to the box at every step), differentiable unless called under
        no_grad; the action clamped to the box."""
        return model.sample(states, self.action_low, self.action_high, "posterior", generator)

    @abstractmethod
    def choose(self, obs: torch.Tensor) -> torch.Tensor:
        """The action for each state of a batch on the device."""

    @torch.inference_mode()
    def act(self, observations: np.ndarray) -> np.ndarray:
        return self.clip(self.choose(self.observations(observations)))

    def critic_spec(self) -> CriticSpec:
        cfg = self.config
        return CriticSpec(self.critic, False, cfg.critic_lr, cfg.batch, cfg.tau, cfg.gamma)

    def q_function(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return self.critic_target

    @property
    def cost(self) -> dict[str, Any]:
        """NFE per action: the noise network's evaluations behind one action (candidates x chain steps)."""
        cfg = self.config
        return self.counted_cost(nfe_per_action=cfg.candidates * cfg.diffusion_steps) | {"candidates": cfg.candidates}


class DiffusionQL(DiffusionActorCritic):
    name = "diffusion_ql"
    description = ("Diffusion-QL (Wang, Hunt & Zhou, ICLR 2023): a diffusion policy trained by its denoising "
                   "loss plus Q-learning through its sampler")
    budget_fields = ("steps",)
    config_cls = DiffusionQLConfig
    presets = PRESETS
    stage_fields = {"policy": tuple(f for f in DiffusionQLConfig.__dataclass_fields__
                                    if f not in ("device", "candidates", "temperature"))}
    networks = ("actor", "ema", "critic", "critic_target")

    @classmethod
    def domain_overrides(cls, preset: str, family: str) -> dict[str, Any]:
        """AntMaze in the official table: 1000 epochs, max-Q backup (all but umaze), eta 0.5-4.5 and gn 1-10
        by dataset (their medians, 2.5 and 2.5)."""
        if preset == "paper" and family == "antmaze":
            return {"steps": 1_000_000, "max_q_backup": True, "eta": 2.5, "grad_norm": 2.5}
        return {}

    def build(self, observation_dim: int, action_dim: int) -> None:
        cfg = self.config
        net = DQLNoiseNet(action_dim, observation_dim, cfg.hidden, cfg.layers)
        self.actor = DiscreteDiffusion(net, action_dim, cfg.diffusion_steps, cfg.beta_max).to(self.device)
        self.critic = TwinQ(action_dim, observation_dim, cfg.q_hidden, cfg.q_layers, Mish).to(self.device)
        self.ema = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)

    def train(self, t: Any, workdir: Path | None, hooks: TrainHooks | None, progress: bool) -> dict[str, Any]:
        cfg, n = self.config, t.observations.shape[0]
        actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
        critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        decay = [torch.optim.lr_scheduler.CosineAnnealingLR(o, max(cfg.steps, 1)) for o in (actor_opt, critic_opt)]
        batches = stage_generator(cfg.seed, "policy", self.device)  # the batch, then L_bc's noise: diffusion BC's stream
        chains = stage_generator(cfg.seed, "chains", self.device)  # the sampler's noise and the coin

        def critic_target(s2: torch.Tensor) -> torch.Tensor:
            if not cfg.max_q_backup:
                return self.critic_target(s2, self.sample(self.ema, s2, chains))
            rep = s2.repeat_interleave(BACKUP_DRAWS, 0)
            q1, q2 = self.critic_target.both(rep, self.sample(self.ema, rep, chains))
            return torch.minimum(q1.view(-1, BACKUP_DRAWS).amax(1), q2.view(-1, BACKUP_DRAWS).amax(1))

        def step(i: int) -> torch.Tensor:
            j = torch.randint(n, (cfg.batch,), device=self.device, generator=batches)
            s, a, r, s2, d = t.observations[j], t.actions[j], t.rewards[j], t.next_observations[j], t.terminals[j]
            with torch.no_grad():
                y = r + cfg.gamma * (1 - d) * critic_target(s2)
            critic_loss = optimiser_step(critic_opt, self.critic.regression_loss(s, a, y), cfg.grad_norm)
            actor_loss = self.actor.loss(a, s, batches, reduce="mean")
            if cfg.eta > 0:
                q1, q2 = self.critic.both(s, self.sample(self.actor, s, chains))
                first = bool(torch.rand((), device=self.device, generator=chains) > 0.5)
                q_loss = -q1.mean() / q2.abs().mean().detach() if first else -q2.mean() / q1.abs().mean().detach()
                actor_loss = actor_loss + cfg.eta * q_loss
            optimiser_step(actor_opt, actor_loss, cfg.grad_norm)
            if i % cfg.ema_every == 0 and i >= cfg.ema_start:
                polyak_update(self.ema, self.actor, 1 - cfg.ema_decay)
            polyak_update(self.critic_target, self.critic, cfg.tau)
            if cfg.lr_decay:
                for schedule in decay:
                    schedule.step()
            return critic_loss

        self.actor.train()
        return run_steps(step, cfg.steps, "policy (diffusion_ql)", progress=progress, workdir=workdir, hooks=hooks,
                         fingerprint=self.fingerprint("policy"),
                         state={"actor": self.actor, "ema": self.ema, "critic": self.critic,
                                "critic_target": self.critic_target, "actor_opt": actor_opt, "critic_opt": critic_opt,
                                "actor_decay": decay[0], "critic_decay": decay[1], "batches": batches, "chains": chains})

    @torch.inference_mode()
    def choose(self, obs: torch.Tensor) -> torch.Tensor:
        """One of `candidates` draws of the policy, picked with probability ∝ exp(Q / temperature)."""
        cfg = self.config
        self.actor.eval()
        rep = obs.repeat_interleave(cfg.candidates, 0)
        candidates = self.sample(self.actor, rep, self._act_generator).view(obs.shape[0], cfg.candidates, -1)
        return select(candidates, self.critic_target(obs, candidates), "softmax", cfg.temperature, 1, self._act_generator)
