"""IDQL: implicit diffusion Q-learning (Hansen-Estruch et al. 2023, "IDQL: Implicit Q-Learning as an
Actor-Critic Method with Diffusion Policies").

  1. behaviour  mu_theta(a|s), a diffusion model of the data's actions          (the shared stage)
  2. critic     IQL's: V by expectile regression on min Q', Q by TD onto r + gamma V(s')   (`IQLCritic`)
  acting        N candidates a^j ~ mu_theta(.|s), one chosen by the critic:
                  greedy     argmax_j Q'(s, a^j)                  (the official code's evaluation, "IDQL-A")
                  expectile  p_j ∝ |tau - 1(Q' - V < 0)|           (the implicit policy the paper derives)
                  softmax    p_j ∝ exp(temperature (Q' - V))       (its "exponential" critic's policy)
The critic never sees the behaviour model, so the two stages are independent. Where this differs from the
official code: the behaviour model is the suite's shared one (QGPO's network, DPM-Solver, 15 steps), not
IDQL's 5-step DDPM with an LN-ResNet, so that a sweep trains it once for QGPO, SfBC and IDQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from envs.dataset import OfflineDataset
from policies import config as cfg_tools
from policies.algorithms.iql import IQLCritic, critic_payload, restore_critic
from policies.algorithms.pretrain import PRETRAIN_FIELDS, PRETRAIN_PRESETS, PretrainConfig, PretrainedAlgorithm, pretrain_settings
from policies.core.samplers import SamplerSpec
from policies.core.selection import RULES, select
from policies.core.training import TrainHooks, stage_generator
from policies.errors import ConfigError


@dataclass(frozen=True)
class IDQLConfig(PretrainConfig):
    """The critic's defaults are IQL's locomotion settings (AntMaze: domain_overrides); acting: the official
    code's N = 64 and argmax. Behaviour fields: `PretrainConfig`'s."""

    critic_hidden: int = 256
    critic_layers: int = 2
    critic_steps: int = 1_000_000
    critic_batch: int = 256
    critic_lr: float = 3e-4
    target_tau: float = 0.005
    expectile: float = 0.7
    normalize_states: bool = False  # the official code feeds raw states (IQL's CORL version normalises)
    # acting
    candidates: int = 64
    rule: str = "greedy"
    temperature: float = 3.0  # the softmax rule's (the expectile rule uses `expectile`)
    sampler: SamplerSpec = SamplerSpec()

    def __post_init__(self) -> None:
        self.check_pretrain("idql")
        cfg_tools.check_bounds(self, "idql", at_least_one=("critic_hidden", "critic_layers", "critic_batch", "candidates"),
                               non_negative=("critic_steps",), positive=("critic_lr",),
                               finite_non_negative=("temperature",), unit_interval=("target_tau",))
        if not 0 < self.expectile < 1:
            raise ConfigError(f"idql: expectile must be in (0, 1), got {self.expectile}")
        if self.rule not in RULES:
            raise ConfigError(f"idql: unknown rule {self.rule!r}; choose one of {', '.join(RULES)}")


def _preset(name: str, **own: Any) -> IDQLConfig:
    return IDQLConfig(**{**pretrain_settings(PRETRAIN_PRESETS[name]), **own})


PRESETS = {"paper": _preset("paper"),
           "cpu": _preset("cpu", critic_steps=10_000, candidates=32),
           "quick": _preset("quick", critic_steps=6_000, candidates=32),
           "tiny": _preset("tiny", critic_hidden=32, critic_steps=50, critic_batch=64, candidates=4,
                           sampler=SamplerSpec(steps=4))}

STAGE_FIELDS = {"behaviour": PRETRAIN_FIELDS["behaviour"],
                "iql_critic": ("critic_hidden", "critic_layers", "critic_steps", "critic_batch", "critic_lr", "gamma",
                               "target_tau", "expectile", "normalize_states")}


class IDQL(PretrainedAlgorithm):
    name = "idql"
    config_cls = IDQLConfig
    presets = PRESETS
    curve_stages = ("iql_critic",)
    stages = ("behaviour", "iql_critic")
    stage_fields = STAGE_FIELDS
    policy_stages = ("behaviour", "iql_critic")

    @classmethod
    def domain_overrides(cls, preset: str, family: str) -> dict[str, Any]:
        """IQL's AntMaze expectile, which IDQL keeps."""
        return {"expectile": 0.9} if preset == "paper" and family == "antmaze" else {}

    def build(self, observation_dim: int, action_dim: int) -> None:
        self.build_pretrained(observation_dim, action_dim)
        cfg = self.config
        self.critic = IQLCritic(observation_dim, action_dim, cfg.critic_hidden, cfg.critic_layers).to(self.device)

    def fit(self, dataset: OfflineDataset, workdir: Path | None = None, progress: bool = False,
            hooks: TrainHooks | None = None) -> dict[str, Any]:
        self.check_dataset(dataset)
        cfg, t = self.config, dataset.transitions.to(self.device)
        self.resume(workdir)
        self.fit_behaviour_stage(t, workdir, hooks, progress)
        with self.stage("iql_critic", workdir, hooks) as todo:
            if todo:
                self.records["iql_critic"] = self.critic.fit(
                    t, steps=cfg.critic_steps, batch=cfg.critic_batch, lr=cfg.critic_lr, gamma=cfg.gamma,
                    target_tau=cfg.target_tau, expectile=cfg.expectile, normalize_states=cfg.normalize_states,
                    generator=stage_generator(cfg.seed, "iql_critic", self.device),
                    fingerprint=self.fingerprint("iql_critic"), workdir=workdir, hooks=hooks, progress=progress,
                    stage="iql_critic (idql)")
                self.save(workdir, "iql_critic", critic_payload(self.critic))
        return {"stages": self.records, "resumed": sorted(self.restored), "cost": self.cost}

    @torch.inference_mode()
    def act(self, observations: np.ndarray, rule: str | None = None, temperature: float | None = None) -> np.ndarray:
        cfg, obs = self.config, self.observations(observations)
        rule = cfg.rule if rule is None else rule
        temperature = (cfg.expectile if rule == "expectile" else cfg.temperature) if temperature is None else temperature
        self.behaviour.eval()
        candidates = self.bounded(self.behaviour.sample(obs, cfg.candidates, cfg.sampler, generator=self._act_generator).x)
        chosen = select(candidates, self.critic.advantage(obs, candidates), rule, temperature, 1, self._act_generator)
        return self.clip(chosen)

    @property
    def cost(self) -> dict[str, Any]:
        """NFE per action: the noise network's evaluations behind one action (candidates x solver steps)."""
        out = self.counted_cost(nfe_per_action=self.config.candidates * self.config.sampler.steps)
        return out | {"candidates": self.config.candidates}

    def restore(self, stage: str, ckpt: dict[str, Any]) -> None:
        if not self.restore_pretrained(stage, ckpt):
            restore_critic(self.critic, ckpt)
