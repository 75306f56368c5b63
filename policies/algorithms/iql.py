"""IQL (Kostrikov, Nair & Levine, ICLR 2022): Q-learning that never queries an action outside the data,
by expectile regression of a state value, then the policy by advantage-weighted regression.

Stage "critic" (states normalised by the dataset's statistics, as CORL's IQL), per step one batch:
  value   min_V  E[ L2^tau( min_i Q'_i(s, a) - V(s) ) ],   L2^tau(u) = |tau - 1(u < 0)| u^2
  q       min_Q  E[ (r + gamma (1 - d) V(s') - Q_i(s, a))^2 ]   for both twins
  target  Polyak averaging of Q' (rate `target_tau`)
At tau = 0.5 the expectile is the mean, V(s) = E_{a~mu}[Q(s, a)]: SARSA's evaluation of the behaviour
policy (tested on an MDP with a known answer); tau -> 1 approaches the best in-support action's value.
Stage "actor", on the trained critic:
  max_pi  E[ min(exp(beta (min_i Q'_i(s, a) - V(s))), max_weight) log pi(a | s) ]
  pi(a|s) = N(tanh-scaled mean(s), diag std) with a state-independent log std; acting uses the mean.
  Its learning rate decays by a cosine to 0 over the stage (the paper's).
The paper's code updates the actor in the same loop as the critic; the actor never feeds back into the
critic, so here it trains after, on the final critic (the decoupling the paper points out), which lets
the critic be a stage of its own.
Every preset keeps the paper's networks (2x256) and locomotion settings (expectile 0.7, beta 3, batch 256, Polyak
0.005); the cpu preset trains 10k steps of each stage (the paper: 1M).
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
from policies import config as cfg_tools
from policies.algorithms.bc import BCPolicy
from policies.algorithms.staged import StagedAlgorithm
from policies.core.fqe import CriticSpec
from policies.core.networks import TwinQ, mlp
from policies.core.normalization import StateNorm
from policies.core.training import TrainHooks, optimiser_step, polyak_update, run_steps, stage_generator
from policies.errors import ConfigError

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


@dataclass(frozen=True)
class IQLConfig(cfg_tools.Config):
    hidden: int = 256
    layers: int = 2
    critic_steps: int = 1_000_000
    actor_steps: int = 1_000_000
    batch: int = 256
    critic_lr: float = 3e-4
    actor_lr: float = 3e-4
    gamma: float = 0.99
    target_tau: float = 0.005
    expectile: float = 0.7  # the paper's locomotion value (AntMaze: 0.9)
    temperature: float = 3.0  # beta (AntMaze: 10)
    max_weight: float = 100.0
    normalize_states: bool = True
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        cfg_tools.check_bounds(self, "iql", at_least_one=("hidden", "layers", "batch"),
                               non_negative=("critic_steps", "actor_steps"), positive=("critic_lr", "actor_lr"),
                               finite_non_negative=("temperature", "max_weight"), unit_interval=("gamma", "target_tau"))
        if not 0 < self.expectile < 1:
            raise ConfigError(f"iql: expectile must be in (0, 1) (0.5: the mean, SARSA), got {self.expectile}")


PRESETS = {"paper": IQLConfig(), "cpu": IQLConfig(critic_steps=10_000, actor_steps=10_000),
           "tiny": IQLConfig(hidden=32, critic_steps=50, actor_steps=30, batch=64)}

CRITIC_FIELDS = ("hidden", "layers", "critic_steps", "batch", "critic_lr", "gamma", "target_tau", "expectile",
                 "normalize_states", "seed")


def expectile_loss(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """E[|tau - 1(u < 0)| u^2] of u = target - prediction."""
    return (torch.where(diff < 0, 1 - tau, tau) * diff.pow(2)).mean()


class GaussianActor(BCPolicy):
    """N(mean(s), diag std): BC's tanh-scaled network as the mean, the log std a free parameter."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: int, layers: int, low: torch.Tensor, high: torch.Tensor):
        super().__init__(obs_dim, action_dim, hidden, layers, low, high)
        self.log_std = nn.Parameter(torch.zeros(action_dim))

    def mean(self, states: torch.Tensor) -> torch.Tensor:
        return self(states)

    def log_prob(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp()
        return torch.distributions.Normal(self.mean(states), std).log_prob(actions).sum(-1)


class IQLCritic(nn.Module):
    """What the critic stage trains: twin Q, its Polyak target, V, and the state normaliser (IDQL reuses it)."""

    def __init__(self, observation_dim: int, action_dim: int, hidden: int, layers: int):
        super().__init__()
        self.q = TwinQ(action_dim, observation_dim, hidden, layers)
        self.v = mlp([observation_dim, *[hidden] * layers, 1])
        self.norm = StateNorm(observation_dim)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)

    def value(self, states: torch.Tensor) -> torch.Tensor:
        """V of normalised states."""
        return self.v(states).squeeze(-1)

    def q_value(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """min_i Q'_i(s, a) for raw states."""
        return self.q_target(self.norm(states), actions)

    def advantage(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """min_i Q'_i(s, a) - V(s) for raw states (B, S) and actions (B, A) or (B, N, A)."""
        s = self.norm(states)
        v = self.value(s)
        return self.q_target(s, actions) - (v[:, None] if actions.dim() == 3 else v)

    def fit(self, t: Any, *, steps: int, batch: int, lr: float, gamma: float, target_tau: float, expectile: float,
            normalize_states: bool, generator: torch.Generator, fingerprint: Any, workdir: Path | None,
            hooks: TrainHooks | None, progress: bool, stage: str) -> dict[str, Any]:
        """Expectile regression of V, TD regression of the twins onto r + gamma (1 - d) V(s'), Polyak targets."""
        if normalize_states:
            self.norm.fit(t.observations)
        s_all, s2_all = self.norm(t.observations), self.norm(t.next_observations)
        q_opt = torch.optim.Adam(self.q.parameters(), lr=lr)
        v_opt = torch.optim.Adam(self.v.parameters(), lr=lr)
        n = s_all.shape[0]

        def step(_: int) -> torch.Tensor:
            j = torch.randint(n, (batch,), device=s_all.device, generator=generator)
            s, a, r, s2, d = s_all[j], t.actions[j], t.rewards[j], s2_all[j], t.terminals[j]
            with torch.no_grad():
                q_hat = self.q_target(s, a)
            v_loss = optimiser_step(v_opt, expectile_loss(q_hat - self.value(s), expectile))
            with torch.no_grad():
                y = r + gamma * (1 - d) * self.value(s2)
            q_loss = optimiser_step(q_opt, self.q.regression_loss(s, a, y))
            polyak_update(self.q_target, self.q, target_tau)
            return q_loss + v_loss

        return run_steps(step, steps, stage, progress=progress, workdir=workdir, hooks=hooks, fingerprint=fingerprint,
                         state={"q": self.q, "q_target": self.q_target, "v": self.v, "q_opt": q_opt, "v_opt": v_opt,
                                "generator": generator})


# the "iql_critic" stage that IDQL and SRPO share (their configs name its fields alike): one checkpoint serves both
ICRITIC_STAGE = "iql_critic"
ICRITIC_FIELDS = ("critic_hidden", "critic_layers", "critic_steps", "critic_batch", "critic_lr", "gamma", "target_tau",
                  "expectile", "normalize_states", "seed")


def build_shared_critic(algo: StagedAlgorithm, observation_dim: int, action_dim: int) -> IQLCritic:
    """The shared critic's networks. Build them first in `build` (IDQL) or under `reseeded(seed)` (SRPO), so that
    they start from the same weights, and the stage's checkpoint is the same, whichever algorithm trains it."""
    cfg = algo.config
    return IQLCritic(observation_dim, action_dim, cfg.critic_hidden, cfg.critic_layers).to(algo.device)


def fit_shared_critic(algo: StagedAlgorithm, critic: IQLCritic, t: Any, workdir: Path | None, hooks: TrainHooks | None,
                      progress: bool) -> None:
    """The "iql_critic" stage: IQL's critic at the config's `ICRITIC_FIELDS`, unless restored."""
    cfg = algo.config
    with algo.stage(ICRITIC_STAGE, workdir, hooks) as todo:
        if todo:
            algo.records[ICRITIC_STAGE] = critic.fit(
                t, steps=cfg.critic_steps, batch=cfg.critic_batch, lr=cfg.critic_lr, gamma=cfg.gamma,
                target_tau=cfg.target_tau, expectile=cfg.expectile, normalize_states=cfg.normalize_states,
                generator=stage_generator(cfg.seed, ICRITIC_STAGE, algo.device),
                fingerprint=algo.fingerprint(ICRITIC_STAGE), workdir=workdir, hooks=hooks, progress=progress,
                stage=f"{ICRITIC_STAGE} ({algo.name})")
            algo.save(workdir, ICRITIC_STAGE, critic_payload(critic))


def critic_payload(critic: IQLCritic) -> dict[str, Any]:
    return {name: getattr(critic, name).state_dict() for name in ("q", "q_target", "v", "norm")}


def restore_critic(critic: IQLCritic, ckpt: dict[str, Any]) -> None:
    for name in ("q", "q_target", "v", "norm"):
        getattr(critic, name).load_state_dict(ckpt[name])


class IQL(StagedAlgorithm):
    name = "iql"
    description = ("IQL (Kostrikov, Nair & Levine, ICLR 2022): expectile regression of a state value, then "
                   "advantage-weighted regression of the policy")
    budget_fields = ("critic_steps", "actor_steps")
    config_cls = IQLConfig
    presets = PRESETS
    curve_stages = ("actor",)
    critic_stages = ("critic",)
    stages = ("critic", "actor")
    stage_fields = {"critic": CRITIC_FIELDS, "actor": ("actor_steps", "actor_lr", "temperature", "max_weight")}
    policy_stages = ("critic", "actor")

    @classmethod
    def domain_overrides(cls, preset: str, family: str) -> dict[str, Any]:
        """The paper's AntMaze settings (expectile 0.9, beta 10); its locomotion ones are the defaults."""
        return {"expectile": 0.9, "temperature": 10.0} if preset == "paper" and family == "antmaze" else {}

    def build(self, observation_dim: int, action_dim: int) -> None:
        cfg = self.config
        self.critic = IQLCritic(observation_dim, action_dim, cfg.hidden, cfg.layers).to(self.device)
        self.actor = GaussianActor(observation_dim, action_dim, cfg.hidden, cfg.layers, self.action_low,
                                   self.action_high).to(self.device)

    def value(self, states: torch.Tensor) -> torch.Tensor:
        return self.critic.value(states)

    def fit(self, dataset: OfflineDataset, workdir: Path | None = None, progress: bool = False,
            hooks: TrainHooks | None = None) -> dict[str, Any]:
        self.check_dataset(dataset)
        cfg, t = self.config, dataset.transitions.to(self.device)
        self.resume(workdir)
        with self.stage("critic", workdir, hooks) as todo:
            if todo:
                self.records["critic"] = self.critic.fit(
                    t, steps=cfg.critic_steps, batch=cfg.batch, lr=cfg.critic_lr, gamma=cfg.gamma,
                    target_tau=cfg.target_tau, expectile=cfg.expectile, normalize_states=cfg.normalize_states,
                    generator=stage_generator(cfg.seed, "critic", self.device), fingerprint=self.fingerprint("critic"),
                    workdir=workdir, hooks=hooks, progress=progress, stage="critic (iql)")
                self.save(workdir, "critic", critic_payload(self.critic))
        with self.stage("actor", workdir, hooks) as todo:
            if todo:
                self.records["actor"] = self.train_actor(t, workdir, hooks, progress)
                self.save(workdir, "actor", {"actor": self.actor.state_dict()})
        return {"stages": self.records, "resumed": sorted(self.restored), "cost": self.cost}

    def train_actor(self, t: Any, workdir: Path | None, hooks: TrainHooks | None, progress: bool) -> dict[str, Any]:
        cfg = self.config
        s_all = self.critic.norm(t.observations)
        with torch.no_grad():  # the critic is fixed here: every transition's weight once
            adv = torch.cat([self.critic.advantage(t.observations[i:i + 65_536], t.actions[i:i + 65_536])
                             for i in range(0, s_all.shape[0], 65_536)])
            weights = torch.exp(cfg.temperature * adv).clamp(max=cfg.max_weight)
        opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(cfg.actor_steps, 1))
        gen, n = stage_generator(cfg.seed, "actor", self.device), s_all.shape[0]

        def step(_: int) -> torch.Tensor:
            j = torch.randint(n, (cfg.batch,), device=self.device, generator=gen)
            loss = optimiser_step(opt, -(weights[j] * self.actor.log_prob(s_all[j], t.actions[j])).mean())
            schedule.step()
            return loss

        self.actor.train()
        return run_steps(step, cfg.actor_steps, "actor (iql)", progress=progress, workdir=workdir, hooks=hooks,
                         fingerprint=self.fingerprint("actor"),
                         state={"actor": self.actor, "optimizer": opt, "schedule": schedule, "generator": gen})

    def critic_spec(self) -> CriticSpec:
        cfg = self.config
        return CriticSpec(self.critic.q, cfg.normalize_states, cfg.critic_lr, cfg.batch, cfg.target_tau, cfg.gamma)

    def q_function(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return self.critic.q_value

    @torch.inference_mode()
    def act(self, observations: np.ndarray) -> np.ndarray:
        self.actor.eval()
        return self.clip(self.actor.mean(self.critic.norm(self.observations(observations))))

    @property
    def cost(self) -> dict[str, Any]:
        return self.counted_cost(nfe_per_action=1)

    def restore(self, stage: str, ckpt: dict[str, Any]) -> None:
        if stage == "critic":
            restore_critic(self.critic, ckpt)
        else:
            self.actor.load_state_dict(ckpt["actor"])
