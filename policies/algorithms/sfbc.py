"""SfBC: selecting from behaviour candidates (Chen et al., ICLR 2023, "Offline RL via High-Fidelity
Generative Behavior Modeling").

  1. behaviour  mu_theta(a|s) by score matching (QGPO's network, which QGPO took from SfBC)   shared stage
  2. support    M = 16 samples of mu_theta for every dataset state                          shared stage
  3. returns    Q_phi(s, a) regressed onto returns, refined by implicit in-sample planning (Sec. 4.2):
                  round 0:  R_i = discounted Monte-Carlo return of the rest of i's episode (on maze2d/PointMaze,
                            whose data is one continuing stream cut at each goal reached, of the rest of the
                            stream, as the official maze2d loader: a return cut at arrival pays dawdling)
                  round k:  V(s_i) = sum_j softmax_j(alpha Q(s_i, a^j)) Q(s_i, a^j),  a^j the support actions,
                            Q in normalised-return units (then mapped back to returns)
                            R_i = max(r_i + gamma R_{i+1} (0 at an episode's end), V(s_i))   (backward in time)
                each round refits Q_phi from its initial weights (fresh Adam) onto normalised R
  acting      N candidates a^j ~ mu_theta(.|s); pick one with probability ∝ exp(temperature Q_phi(s, a^j))
              (temperature 100: nearly the best; on locomotion the official code averages 4 picks)
Stages 1-2 are QGPO's own (`policies.algorithms.pretrain`), so a sweep with QGPO trains them once; the
official code samples its support and candidates with third-order DPM-Solver (15 steps), the shared
support stage with QGPO's second-order one; acting here uses third order, as SfBC's. The cpu preset keeps the
method and shrinks the returns network to width 128 and each round to 3k steps at batch 1024 (official: 256, 24.4k
at 4096), on the shared stages' cpu budgets.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from envs.dataset import OfflineDataset
from envs.families import CONTINUING_FAMILIES
from policies import config as cfg_tools
from policies.algorithms.pretrain import PRETRAIN_FIELDS, PRETRAIN_PRESETS, PretrainConfig, PretrainedAlgorithm, pretrain_settings
from policies.core.networks import mlp
from policies.core.samplers import SamplerSpec
from policies.core.selection import select
from policies.core.training import TrainHooks, optimiser_step, run_steps, stage_generator
from policies.errors import ConfigError


@dataclass(frozen=True)
class SfBCConfig(PretrainConfig):
    """Defaults: the official code's (train_critic.py, utils.py); behaviour and support: `PretrainConfig`'s."""

    returns_hidden: int = 256
    returns_layers: int = 2
    rounds: int = 2  # K: the Monte-Carlo fit and K - 1 planning updates
    round_steps: int = 24_400  # 100 epochs of ~1M samples at batch 4096
    returns_batch: int = 4096
    returns_lr: float = 1e-3
    plan_temperature: float = 20.0  # alpha of the in-sample value
    plan_gamma: float = 0.99
    continuing: bool = False  # returns run on across truncations (maze2d, PointMaze: domain_overrides)
    # acting
    candidates: int = 32
    temperature: float = 100.0
    keep: int = 1  # 4 on locomotion (domain_overrides)
    sampler: SamplerSpec = SamplerSpec(order=3)

    def __post_init__(self) -> None:
        self.check_pretrain("sfbc")
        cfg_tools.check_bounds(self, "sfbc", at_least_one=("returns_hidden", "returns_layers", "rounds", "returns_batch",
                                                           "candidates", "keep"),
                               non_negative=("round_steps",), positive=("returns_lr",),
                               finite_non_negative=("plan_temperature", "temperature"), unit_interval=("plan_gamma",))
        if self.keep > self.candidates:
            raise ConfigError(f"sfbc: keep ({self.keep}) picks without replacement, so it cannot exceed "
                                        f"candidates ({self.candidates})")


def _preset(name: str, **own: Any) -> SfBCConfig:
    return SfBCConfig(**{**pretrain_settings(PRETRAIN_PRESETS[name]), **own})


PRESETS = {"paper": _preset("paper"),
           "cpu": _preset("cpu", returns_hidden=128, round_steps=3_000, returns_batch=1024),
           "quick": _preset("quick", returns_hidden=128, round_steps=2_000, returns_batch=1024),
           "tiny": _preset("tiny", returns_hidden=32, round_steps=20, returns_batch=64, candidates=4,
                           sampler=SamplerSpec(steps=3, order=3))}

STAGE_FIELDS = {"behaviour": PRETRAIN_FIELDS["behaviour"], "support": PRETRAIN_FIELDS["support"],
                "returns": ("returns_hidden", "returns_layers", "rounds", "round_steps", "returns_batch", "returns_lr",
                            "plan_temperature", "plan_gamma", "continuing")}


class ReturnTargets(nn.Module):
    """The current round's regression targets, as buffers so that a mid-stage checkpoint keeps them."""

    def __init__(self, n: int):
        super().__init__()
        self.register_buffer("raw", torch.zeros(n))
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("std", torch.ones(()))

    def set(self, raw: torch.Tensor) -> None:
        self.raw.copy_(raw)
        self.mean.copy_(raw.mean())
        self.std.copy_(raw.std(unbiased=False).clamp_min(0.1))  # the official floor

    def normalised(self, i: torch.Tensor) -> torch.Tensor:
        return (self.raw[i] - self.mean) / self.std


def planned_returns(rewards: torch.Tensor, values: torch.Tensor, episode_starts: torch.Tensor, gamma: float) -> torch.Tensor:
    """R_i = max(r_i + gamma R_{i+1}, V(s_i)) backward within each run of `episode_starts` (R after its end:
    0); with V = -inf, the Monte-Carlo returns."""
    r, v = rewards.double().cpu().tolist(), values.double().cpu().tolist()
    out = [0.0] * len(r)
    bounds = episode_starts.cpu().tolist()
    for begin, end in zip(bounds[:-1], bounds[1:]):
        g = 0.0
        for i in range(end - 1, begin - 1, -1):
            g = max(r[i] + gamma * g, v[i])
            out[i] = g
    return torch.tensor(out, dtype=torch.float32, device=rewards.device)


class SfBC(PretrainedAlgorithm):
    name = "sfbc"
    description = ("SfBC (Chen et al., ICLR 2023): a diffusion behaviour model's candidate actions selected by a"
                   " critic trained on planning returns")
    budget_fields = ("behaviour_steps", "round_steps")
    config_cls = SfBCConfig
    presets = PRESETS
    curve_stages = ("returns",)
    stages = ("behaviour", "support", "returns")
    critic_stages = ("returns",)  # its Q_phi, in return units, read by the harness's critic check as any critic
    stage_fields = STAGE_FIELDS
    policy_stages = ("behaviour", "returns")

    @classmethod
    def domain_overrides(cls, preset: str, family: str) -> dict[str, Any]:
        """The official evaluation averages 4 picks on locomotion ("to stabilise performance"); its AntMaze
        epochs see 2M samples, not 1M, so each round is twice as long. Its maze2d loader runs returns over the
        whole continuing stream: a property of the data, so every preset takes it."""
        if family in CONTINUING_FAMILIES:
            return {"continuing": True}
        if preset != "paper":
            return {}
        return {"locomotion": {"keep": 4}, "antmaze": {"round_steps": 48_800}}.get(family, {})

    def build(self, observation_dim: int, action_dim: int) -> None:
        self.build_pretrained(observation_dim, action_dim)
        cfg = self.config
        self.returns_q = mlp([observation_dim + action_dim, *[cfg.returns_hidden] * cfg.returns_layers, 1],
                             nn.SiLU).to(self.device)
        self._initial = copy.deepcopy(self.returns_q.state_dict())  # each round restarts here
        # Q_phi's scale back to returns: the training round's targets while the stage trains, then (mean, std)
        self._targets: ReturnTargets | None = None
        self._scale: torch.Tensor | None = None

    def returns_value(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q_phi in normalised-return units; actions (B, A) or (B, N, A)."""
        if actions.dim() == 3:
            states = states.unsqueeze(1).expand(-1, actions.shape[1], -1)
        return self.returns_q(torch.cat([states, actions], -1)).squeeze(-1)

    def q_function(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
        """Q_phi mapped back to returns by the current round's target scale (live while the stage trains, kept
        in its checkpoint after); None before the stage, or restored from a checkpoint that predates the scale."""
        live = self._targets
        scale = torch.stack([live.mean, live.std]) if live is not None else self._scale
        if scale is None:
            return None
        mean, std = scale.to(self.device).unbind()
        return lambda states, actions: self.returns_value(states, actions) * std + mean

    def critic_discount(self) -> float:
        return self.config.plan_gamma

    def fit(self, dataset: OfflineDataset, workdir: Path | None = None, progress: bool = False,
            hooks: TrainHooks | None = None) -> dict[str, Any]:
        self.check_dataset(dataset)
        t = dataset.transitions.to(self.device)
        self.resume(workdir)
        self.fit_behaviour_stage(t, workdir, hooks, progress)
        self.fit_support_stage(t, workdir, hooks, progress)
        with self.stage("returns", workdir, hooks) as todo:
            if todo:
                self.records["returns"] = self.train_returns(t, workdir, hooks, progress)
                self.save(workdir, "returns", {"returns_q": self.returns_q.state_dict(), "return_scale": self._scale})
        self._support = {}
        return {"stages": self.records, "resumed": sorted(self.restored), "cost": self.cost}

    def train_returns(self, t: Any, workdir: Path | None, hooks: TrainHooks | None, progress: bool) -> dict[str, Any]:
        cfg, n = self.config, t.observations.shape[0]
        support = self._support["support"][:n]  # the dataset states' rows
        streams = t.return_streams(cfg.continuing)
        targets = self._targets = ReturnTargets(n).to(self.device)
        targets.set(planned_returns(t.rewards, torch.full_like(t.rewards, -torch.inf), streams, cfg.plan_gamma))
        opt = torch.optim.Adam(self.returns_q.parameters(), lr=cfg.returns_lr)
        gen = stage_generator(cfg.seed, "returns", self.device)

        def plan() -> None:
            """The next round: targets from the planned returns under the current Q_phi, Q_phi reset."""
            with torch.no_grad():
                q = torch.cat([self.returns_value(t.observations[i:i + 4096], support[i:i + 4096]) for i in range(0, n, 4096)])
                v = (torch.softmax(cfg.plan_temperature * q, -1) * q).sum(-1)  # alpha acts on normalised Q, as officially
            targets.set(planned_returns(t.rewards, v * targets.std + targets.mean, streams, cfg.plan_gamma))
            self.returns_q.load_state_dict(self._initial)
            opt.state.clear()

        def step(i: int) -> torch.Tensor:
            if i > 0 and i % cfg.round_steps == 0:
                plan()
            j = torch.randint(n, (cfg.returns_batch,), device=self.device, generator=gen)
            return optimiser_step(opt, (self.returns_value(t.observations[j], t.actions[j]) - targets.normalised(j)).pow(2).mean())

        self.returns_q.train()
        record = run_steps(step, cfg.rounds * cfg.round_steps, "returns (sfbc)", progress=progress, workdir=workdir,
                           hooks=hooks, fingerprint=self.fingerprint("returns"),
                           state={"returns_q": self.returns_q, "targets": targets, "optimizer": opt, "generator": gen})
        self._scale, self._targets = torch.stack([targets.mean, targets.std]).cpu(), None
        return record

    @torch.inference_mode()
    def act(self, observations: np.ndarray) -> np.ndarray:
        cfg, obs = self.config, self.observations(observations)
        self.behaviour.eval()
        candidates = self.bounded(self.behaviour.sample(obs, cfg.candidates, cfg.sampler, generator=self._act_generator).x)
        chosen = select(candidates, self.returns_value(obs, candidates), "softmax", cfg.temperature, cfg.keep, self._act_generator)
        return self.clip(chosen)

    @property
    def cost(self) -> dict[str, Any]:
        """NFE per action: the noise network's evaluations behind one action (candidates x solver steps)."""
        cfg = self.config
        steps = {s: self.records[s]["steps"] for s in ("behaviour", "returns") if s in self.records}
        return {"gradient_steps": steps, "gradient_steps_total": sum(steps.values()), "candidates": cfg.candidates,
                "nfe_per_action": cfg.candidates * cfg.sampler.steps, "support_nfe_per_action": cfg.support_sampler.steps}

    def restore(self, stage: str, ckpt: dict[str, Any]) -> None:
        if not self.restore_pretrained(stage, ckpt):
            self.returns_q.load_state_dict(ckpt["returns_q"])
            self._scale = ckpt.get("return_scale")
