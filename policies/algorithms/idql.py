"""IDQL: implicit diffusion Q-learning (Hansen-Estruch et al. 2023, "IDQL: Implicit Q-Learning as an
Actor-Critic Method with Diffusion Policies").

  1. critic     IQL's: V by expectile regression on min Q', Q by TD onto r + gamma V(s')   (`IQLCritic`)
  2. behaviour  mu_theta(a|s), a diffusion model of the data's actions, trained by denoising alone
                (the official actor objective "bc"), with an EMA copy (rate `ema_tau` a step) that acts
  acting        N candidates a^j ~ mu_ema(.|s), one chosen by the critic:
                  greedy     argmax_j Q'(s, a^j)                  (the official code's evaluation, "IDQL-A")
                  expectile  p_j ∝ |tau - 1(Q' - V < 0)|           (the implicit policy the paper derives)
                  softmax    p_j ∝ exp(temperature (Q' - V))       (its "exponential" critic's policy)
The two stages never read each other; the critic comes first so that the behaviour stage's learning curve
acts with the final critic, as the policy that is evaluated does. The official network and sampler at every
preset (ddpm_iql_learner.py, train_ddpm_iql_offline.py): the LN-ResNet noise network (`LNResNetNoiseNet`: 3
blocks of width 256, dropout 0.1, layer norm) on T = 5 discrete VP levels, the DDPM chain that clips the action
to the box after every step (`policies.core.ddpm`, "clipped"), the EMA copy sampling, batch 512 for the actor
and 256 for the critic, the actor's learning rate decaying by a cosine to 0 over its steps. Where this differs:
the official loop updates both every step for 3M steps; here each stage has its own budget; every layer starts
from torch's default uniform(±1/sqrt(fan_in)), weights and biases, where the official jaxrl5 layers start
Glorot-uniform (the noise network's input and output layers, the critics) or LeCun-normal (inside the residual
blocks) with zero biases, and its layer norm's epsilon is 1e-6 (here 1e-5).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from envs.dataset import OfflineDataset
from policies import config as cfg_tools
from policies.algorithms.iql import (ICRITIC_FIELDS, ICRITIC_STAGE, build_shared_critic, fit_shared_critic,
                                     restore_critic)
from policies.algorithms.staged import StagedAlgorithm
from policies.core.ddpm import DiscreteDiffusion
from policies.core.fqe import CriticSpec
from policies.core.networks import LNResNetNoiseNet
from policies.core.selection import RULES, select
from policies.core.training import TrainHooks, optimiser_step, polyak_update, run_steps, stage_generator
from policies.errors import ConfigError


@dataclass(frozen=True)
class IDQLConfig(cfg_tools.Config):
    """Defaults: the official locomotion settings (AntMaze: domain_overrides); acting: N = 64 and argmax."""

    # behaviour: the LN-ResNet DDPM
    hidden: int = 256
    blocks: int = 3
    dropout: float = 0.1
    diffusion_steps: int = 5
    beta_max: float = 10.0
    behaviour_steps: int = 3_000_000
    behaviour_batch: int = 512
    behaviour_lr: float = 3e-4  # decays by a cosine to 0 over behaviour_steps
    ema_tau: float = 0.001
    # critic: IQL's
    critic_hidden: int = 256
    critic_layers: int = 2
    critic_steps: int = 3_000_000
    critic_batch: int = 256
    critic_lr: float = 3e-4
    gamma: float = 0.99
    target_tau: float = 0.005
    expectile: float = 0.7
    normalize_states: bool = False  # the official code feeds raw states (IQL's CORL version normalises)
    # acting
    candidates: int = 64
    rule: str = "greedy"
    temperature: float = 3.0  # the softmax rule's (the expectile rule uses `expectile`)
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        cfg_tools.check_bounds(self, "idql", at_least_one=("hidden", "blocks", "diffusion_steps", "behaviour_batch",
                                                           "critic_hidden", "critic_layers", "critic_batch", "candidates"),
                               non_negative=("behaviour_steps", "critic_steps"),
                               positive=("behaviour_lr", "critic_lr", "beta_max"),
                               finite_non_negative=("temperature",),
                               unit_interval=("dropout", "ema_tau", "gamma", "target_tau"))
        if not 0 < self.expectile < 1:
            raise ConfigError(f"idql: expectile must be in (0, 1), got {self.expectile}")
        if self.rule not in RULES:
            raise ConfigError(f"idql: unknown rule {self.rule!r}; choose one of {', '.join(RULES)}")


PRESETS = {"paper": IDQLConfig(),
           "cpu": IDQLConfig(behaviour_steps=10_000, critic_steps=10_000, candidates=32),
           "quick": IDQLConfig(behaviour_steps=5_000, critic_steps=6_000, candidates=32),
           "tiny": IDQLConfig(hidden=16, blocks=1, behaviour_steps=40, behaviour_batch=64, critic_hidden=32,
                              critic_steps=50, critic_batch=64, candidates=4)}

STAGE_FIELDS = {ICRITIC_STAGE: ICRITIC_FIELDS,
                "behaviour": ("hidden", "blocks", "dropout", "diffusion_steps", "beta_max", "behaviour_steps",
                              "behaviour_batch", "behaviour_lr", "ema_tau")}


class IDQL(StagedAlgorithm):
    name = "idql"
    description = ("IDQL (Hansen-Estruch et al., 2023): IQL's critic and a diffusion behaviour model whose "
                   "samples are resampled by the critic's implicit policy weights")
    budget_fields = ("critic_steps", "behaviour_steps")
    config_cls = IDQLConfig
    presets = PRESETS
    curve_stages = ("behaviour",)
    critic_stages = ("iql_critic",)
    stages = ("iql_critic", "behaviour")
    stage_fields = STAGE_FIELDS
    policy_stages = ("iql_critic", "behaviour")
    shared_stages = (ICRITIC_STAGE,)  # SRPO trains the same critic

    @classmethod
    def domain_overrides(cls, preset: str, family: str) -> dict[str, Any]:
        """IQL's AntMaze expectile, which IDQL keeps."""
        return {"expectile": 0.9} if preset == "paper" and family == "antmaze" else {}

    def build(self, observation_dim: int, action_dim: int) -> None:
        cfg = self.config
        self.critic = build_shared_critic(self, observation_dim, action_dim)
        net = LNResNetNoiseNet(action_dim, observation_dim, cfg.hidden, cfg.blocks, cfg.dropout)
        self.behaviour = DiscreteDiffusion(net, action_dim, cfg.diffusion_steps, cfg.beta_max).to(self.device)
        self.ema = copy.deepcopy(self.behaviour).requires_grad_(False)

    def fit(self, dataset: OfflineDataset, workdir: Path | None = None, progress: bool = False,
            hooks: TrainHooks | None = None) -> dict[str, Any]:
        self.check_dataset(dataset)
        cfg, t = self.config, dataset.transitions.to(self.device)
        self.resume(workdir)
        fit_shared_critic(self, self.critic, t, workdir, hooks, progress)
        with self.stage("behaviour", workdir, hooks) as todo:
            if todo:
                self.records["behaviour"] = self.train_behaviour(t, workdir, hooks, progress)
                self.save(workdir, "behaviour", {"behaviour": self.behaviour.state_dict(), "ema": self.ema.state_dict()})
        return {"stages": self.records, "resumed": sorted(self.restored), "cost": self.cost}

    def train_behaviour(self, t: Any, workdir: Path | None, hooks: TrainHooks | None, progress: bool) -> dict[str, Any]:
        """Denoising on the data's actions (summed over dimensions), Adam with a cosine decay, the EMA copy after
        every step; the dropout masks come from the stage's own stream, so a run resumes bit for bit."""
        cfg, n = self.config, t.observations.shape[0]
        opt = torch.optim.Adam(self.behaviour.parameters(), lr=cfg.behaviour_lr)
        decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(cfg.behaviour_steps, 1))
        gen = stage_generator(cfg.seed, "behaviour", self.device)

        devices = [self.device] if self.device.type == "cuda" else []

        def step(_: int) -> torch.Tensor:
            j = torch.randint(n, (cfg.behaviour_batch,), device=self.device, generator=gen)
            with torch.random.fork_rng(devices=devices):  # dropout draws from the global stream: seed it from ours
                torch.manual_seed(int(torch.randint(2 ** 62, (), device=self.device, generator=gen)))
                loss = optimiser_step(opt, self.behaviour.loss(t.actions[j], t.observations[j], gen))
            decay.step()
            polyak_update(self.ema, self.behaviour, cfg.ema_tau)
            return loss

        self.behaviour.train()
        return run_steps(step, cfg.behaviour_steps, "behaviour (idql)", progress=progress, workdir=workdir, hooks=hooks,
                         fingerprint=self.fingerprint("behaviour"),
                         state={"behaviour": self.behaviour, "ema": self.ema, "optimizer": opt, "decay": decay,
                                "generator": gen})

    @torch.inference_mode()
    def act(self, observations: np.ndarray, rule: str | None = None, temperature: float | None = None) -> np.ndarray:
        cfg, obs = self.config, self.observations(observations)
        rule = cfg.rule if rule is None else rule
        temperature = (cfg.expectile if rule == "expectile" else cfg.temperature) if temperature is None else temperature
        self.ema.eval()  # no dropout when acting
        candidates = self.draw(obs.repeat_interleave(cfg.candidates, 0)).view(obs.shape[0], cfg.candidates, -1)
        chosen = select(candidates, self.critic.advantage(obs, candidates), rule, temperature, 1, self._act_generator)
        return self.clip(chosen)

    def critic_spec(self) -> CriticSpec:
        cfg = self.config
        return CriticSpec(self.critic.q, cfg.normalize_states, cfg.critic_lr, cfg.critic_batch, cfg.target_tau,
                          cfg.gamma)

    def q_function(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return self.critic.q_value

    def draw(self, states: torch.Tensor) -> torch.Tensor:
        """One action per state from the EMA copy by the official clipped chain."""
        return self.ema.sample(states, self.action_low, self.action_high, "clipped", self._act_generator)

    @property
    def cost(self) -> dict[str, Any]:
        """NFE per action: the noise network's evaluations behind one action (candidates x chain steps)."""
        out = self.counted_cost(nfe_per_action=self.config.candidates * self.config.diffusion_steps)
        return out | {"candidates": self.config.candidates}

    def restore(self, stage: str, ckpt: dict[str, Any]) -> None:
        if stage == "iql_critic":
            restore_critic(self.critic, ckpt)
        else:
            self.behaviour.load_state_dict(ckpt["behaviour"])
            self.ema.load_state_dict(ckpt["ema"])
