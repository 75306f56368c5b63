"""Behaviour cloning: the floor every offline-RL method is compared against (D4RL, TD3+BC, IQL).

A deterministic MLP policy regressed onto the dataset's actions,
    pi = argmin_pi E_{(s, a) ~ D} || pi(s) - a ||^2,
so pi(s) estimates the behaviour policy's mean action E[a | s], squashed by tanh into the bounds.
One stage; no critic, no sampling noise: one network evaluation per action. Every preset keeps D4RL's and
TD3+BC's BC network (2x256 ReLU, Adam 3e-4, batch 256); the cpu preset trains 20k steps of the official 1M
(its curve at three budgets: results/budgets.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from envs.dataset import OfflineDataset
from policies import config as cfg_tools
from policies.core.networks import mlp
from policies.algorithms.staged import StagedAlgorithm
from policies.core.training import TrainHooks, optimiser_step, run_steps, stage_generator


@dataclass(frozen=True)
class BCConfig(cfg_tools.Config):
    hidden: int = 256
    layers: int = 2
    steps: int = 1_000_000
    batch: int = 256
    lr: float = 3e-4
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        cfg_tools.check_bounds(self, "bc", at_least_one=("hidden", "layers", "batch"), non_negative=("steps",),
                               positive=("lr",))


PRESETS = {"paper": BCConfig(), "cpu": BCConfig(steps=20_000), "tiny": BCConfig(hidden=32, steps=50, batch=64)}


class BCPolicy(nn.Module):
    """MLP with a tanh head scaled to [low, high], so every output is a valid action."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: int, layers: int, low: torch.Tensor, high: torch.Tensor):
        super().__init__()
        self.net = mlp([obs_dim, *[hidden] * layers, action_dim])
        self.register_buffer("centre", (high + low) / 2)
        self.register_buffer("radius", (high - low) / 2)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.centre + self.radius * torch.tanh(self.net(states))


def fit_bc(policy: BCPolicy, states: torch.Tensor, actions: torch.Tensor, *, steps: int, batch: int, lr: float,
           generator: torch.Generator, progress: bool = False, workdir: Path | None = None,
           hooks: TrainHooks | None = None, fingerprint: Any = None) -> dict:
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    n = states.shape[0]

    def step(_: int) -> torch.Tensor:
        i = torch.randint(n, (batch,), device=states.device, generator=generator)
        return optimiser_step(opt, (policy(states[i]) - actions[i]).pow(2).sum(-1).mean())

    policy.train()
    return run_steps(step, steps, "policy", progress=progress, workdir=workdir, hooks=hooks, fingerprint=fingerprint,
                     state={"policy": policy, "optimizer": opt, "generator": generator})


class BC(StagedAlgorithm):
    name = "bc"
    description = ("Behaviour cloning: an MLP regressed onto the dataset's actions (TD3+BC's network), the floor"
                   " every method is compared against")
    budget_fields = ("steps",)
    config_cls = BCConfig
    presets = PRESETS
    curve_stages = ("policy",)
    stages = ("policy",)
    stage_fields = {"policy": ("hidden", "layers", "steps", "batch", "lr", "seed")}
    policy_stages = ("policy",)

    def build(self, observation_dim: int, action_dim: int) -> None:
        cfg = self.config
        self.policy = BCPolicy(observation_dim, action_dim, cfg.hidden, cfg.layers, self.action_low,
                               self.action_high).to(self.device)

    def fit(self, dataset: OfflineDataset, workdir: Path | None = None, progress: bool = False,
            hooks: TrainHooks | None = None) -> dict[str, Any]:
        self.check_dataset(dataset)
        cfg, t = self.config, dataset.transitions.to(self.device)
        resumed = self.resume(workdir)
        if "policy" not in resumed:
            self.records["policy"] = fit_bc(
                self.policy, t.observations, t.actions, steps=cfg.steps, batch=cfg.batch, lr=cfg.lr,
                generator=stage_generator(cfg.seed, "policy", self.device), progress=progress, workdir=workdir,
                hooks=hooks, fingerprint=self.fingerprint("policy"))
            self.save(workdir, "policy", {"policy": self.policy.state_dict()})
        return {"stages": self.records, "resumed": sorted(resumed), "cost": self.cost}

    @torch.inference_mode()
    def act(self, observations: np.ndarray) -> np.ndarray:
        self.policy.eval()
        return self.clip(self.policy(self.observations(observations)))

    @property
    def cost(self) -> dict[str, Any]:
        return self.counted_cost(nfe_per_action=1)

    def restore(self, stage: str, ckpt: dict[str, Any]) -> None:
        self.policy.load_state_dict(ckpt["policy"])
