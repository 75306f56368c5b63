"""QGPO: energy-guided diffusion by Contrastive Energy Prediction (Lu et al., ICML 2023).

Algorithm 1 of the paper, as stages that checkpoint separately:
  1. behaviour model mu(a|s) by denoising score matching                       (Sec. 4.1)
  2. support actions: M samples of mu for every dataset state and next state  (Sec. 4.2)
  3. Q_0 by in-support softmax Q-learning:                                     (eq. 14)
        V(s') = sum_i softmax_i(beta_Q Q(s', a^i)) Q(s', a^i),  a^i ~ mu(.|s')
  4. intermediate energy f_phi(a_t, s, t) by contrastive energy prediction:   (eq. 13)
        L = -E_{s, t} sum_i softmax_i(beta Q_0(s, a^i)) log softmax_i f_phi(a_t^i, s, t)
     (or the "mse" baseline: regress f_phi(a_t, s, t) onto beta Q_0(s, a) for dataset actions)
With `interleave` (the official code's schedule, the paper preset's), stages 3 and 4 share their first
q_steps batches: each batch updates Q_0, then f_phi against the Q_0 being trained; f_phi then goes on alone.
Acting samples pi(a|s) ∝ mu(a|s) exp(beta Q_0(s, a)) with the guided score
    score_theta(a_t, s, t) + scale * grad_a f_phi(a_t, s, t),   scale = 1 being exact.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import copy
import time

import numpy as np
import torch
import torch.nn.functional as F

from envs.dataset import OfflineDataset
from policies import config as cfg_tools
from policies.diffusion import DiffusionModel, fit_behaviour
from policies.errors import ConfigError
from policies.networks import EnergyNet, TwinQ
from policies.samplers import SamplerSpec
from policies.schedule import VPSchedule
from policies.staged import StagedAlgorithm
from policies.training import TrainHooks, optimiser_step, polyak_update, run_steps, stage_generator

ENERGY_LOSSES = ("cep", "mse")


@dataclass(frozen=True)
class QGPOConfig(cfg_tools.Config):
    """Defaults are the paper's (the "paper" preset); see `PRESETS` for the others."""

    # networks
    score_widths: tuple[int, ...] = (512, 256, 128)
    energy_hidden: int = 256
    energy_layers: int = 4
    q_hidden: int = 256
    q_layers: int = 3
    # stage 1: behaviour model
    behaviour_steps: int = 600_000
    behaviour_batch: int = 4096
    behaviour_lr: float = 1e-4
    # stage 2: support actions
    support_m: int = 16  # 32 for AntMaze in the paper
    support_sampler: SamplerSpec = SamplerSpec()
    support_chunk: int = 65_536  # actions per batched solve
    # stage 3: Q_0
    q_steps: int = 500_000
    q_batch: int = 256
    q_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    beta_q: float = 1.0
    # stage 4: f_phi
    energy_steps: int = 1_000_000
    energy_batch: int = 256
    energy_lr: float = 3e-4
    beta: float = 3.0
    energy_loss: str = "cep"
    # the official schedule: the first q_steps steps update Q_0 and then f_phi on the same batch (f_phi's
    # targets from the Q_0 being trained), the rest update f_phi alone; off: Q_0 to the end, then f_phi
    interleave: bool = True
    # acting
    sampler: SamplerSpec = SamplerSpec()
    guidance_scale: float = 1.0
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        cfg_tools.check_bounds(
            self, "qgpo",
            at_least_one=("energy_hidden", "energy_layers", "q_hidden", "q_layers", "behaviour_batch", "support_m",
                          "support_chunk", "q_batch", "energy_batch"),
            non_negative=("behaviour_steps", "q_steps", "energy_steps"),
            positive=("behaviour_lr", "q_lr", "energy_lr"))
        if not self.score_widths or min(self.score_widths) < 1:
            raise ConfigError(f"qgpo: score_widths must be positive widths, got {self.score_widths}")
        if not 0 <= self.gamma <= 1:
            raise ConfigError(f"qgpo: gamma must be in [0, 1], got {self.gamma}")
        if not 0 < self.tau <= 1:
            raise ConfigError(f"qgpo: tau must be in (0, 1], got {self.tau}")
        if self.beta < 0 or self.beta_q < 0:
            raise ConfigError(f"qgpo: beta and beta_q must be >= 0, got {self.beta}, {self.beta_q}")
        if self.guidance_scale < 0:
            raise ConfigError(f"qgpo: guidance_scale must be >= 0 (0 is plain behaviour cloning), got {self.guidance_scale}")
        if self.energy_loss not in ENERGY_LOSSES:
            raise ConfigError(f"qgpo: unknown energy_loss {self.energy_loss!r}; choose one of {', '.join(ENERGY_LOSSES)}")
        if self.interleave and self.energy_batch != self.q_batch:
            raise ConfigError(f"qgpo: interleave trains Q_0 and f_phi on the same batch, so energy_batch "
                              f"({self.energy_batch}) must equal q_batch ({self.q_batch}); set both, or interleave=false")
        if self.interleave and self.energy_steps < self.q_steps:
            raise ConfigError(f"qgpo: interleave needs energy_steps >= q_steps (f_phi trains alongside every Q_0 "
                              f"step), got {self.energy_steps} < {self.q_steps}; or set interleave=false")
        for name in ("sampler", "support_sampler"):
            if not isinstance(getattr(self, name), SamplerSpec):
                raise ConfigError(f"qgpo: {name} must be a SamplerSpec")


PRESETS: dict[str, QGPOConfig] = {
    "paper": QGPOConfig(),
    # PointMaze (100k transitions) end to end in well under 20 minutes on 2 CPU cores: the support
    # stage (every state x M samples x solver steps) dominates, so M and its steps shrink most
    "cpu": QGPOConfig(score_widths=(256, 128, 64), energy_hidden=128, q_hidden=128,
                      behaviour_steps=5_000, behaviour_batch=256, behaviour_lr=3e-4,
                      support_m=8, support_sampler=SamplerSpec(steps=6),
                      q_steps=10_000, energy_steps=5_000, energy_batch=128, interleave=False),
    # seconds, for tests: every stage runs, nothing converges
    "tiny": QGPOConfig(score_widths=(32, 16, 8), energy_hidden=32, q_hidden=32, behaviour_steps=50, behaviour_batch=64,
                       support_m=4, support_sampler=SamplerSpec(steps=4), q_steps=50, q_batch=32, energy_steps=50,
                       energy_batch=16, sampler=SamplerSpec(steps=4), interleave=False),
}
# `diffbench quick`: two seeds at once, one core each, in about 12 minutes with the dataset; the cpu
# preset with fewer steps in every stage and a 4-step solver for the support actions
PRESETS["quick"] = replace(PRESETS["cpu"], behaviour_steps=3_000, support_sampler=SamplerSpec(steps=4),
                           q_steps=6_000, energy_steps=3_000)

# The official per-domain settings (train_critic.py of the CEP code): more support actions on AntMaze,
# and the guidance scales its evaluation sweeps.
PAPER_DOMAIN_OVERRIDES = {"antmaze": {"support_m": 32}}
PAPER_GUIDANCE_SCALES = {"locomotion": (0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 10.0), "antmaze": (1.0, 1.5, 2.0, 2.5, 3.0, 4.0)}

# Which config fields each stage's result depends on (with those of the stages before it).
STAGES = ("behaviour", "support", "critic", "energy")
_STAGE_FIELDS = {
    "behaviour": ("score_widths", "behaviour_steps", "behaviour_batch", "behaviour_lr", "seed"),
    "support": ("support_m", "support_sampler"),
    "critic": ("q_hidden", "q_layers", "q_steps", "q_batch", "q_lr", "gamma", "tau", "beta_q", "interleave"),
    "energy": ("energy_hidden", "energy_layers", "energy_steps", "energy_batch", "energy_lr", "beta", "energy_loss"),
}


# ---------------------------------------------------------------- the losses (eqs. 13, 14)

def in_support_value(q_next: torch.Tensor, beta_q: float) -> torch.Tensor:
    """V(s') = sum_i softmax_i(beta_Q Q(s', a^i)) Q(s', a^i) over the support actions (last dim)."""
    return (torch.softmax(beta_q * q_next, -1) * q_next).sum(-1)


def td_loss(q: TwinQ, q_target: TwinQ, states: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
            terminals: torch.Tensor, next_states: torch.Tensor, next_support: torch.Tensor, gamma: float,
            beta_q: float) -> torch.Tensor:
    """Twin-Q regression onto r + gamma (1 - done) V(s'), V the in-support softmax value (eq. 14)."""
    with torch.no_grad():
        y = rewards + gamma * (1.0 - terminals) * in_support_value(q_target(next_states, next_support), beta_q)
    q1, q2 = q.both(states, actions)
    return 0.5 * ((q1 - y).pow(2).mean() + (q2 - y).pow(2).mean())


def cep_loss(energy: EnergyNet, schedule: VPSchedule, states: torch.Tensor, support: torch.Tensor,
             support_q: torch.Tensor, beta: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Contrastive energy prediction over the M support actions of each state, one t per state."""
    b = support.shape[0]
    t = schedule.sample_time(b, support.device, generator)
    z = torch.randn(support.shape, device=support.device, generator=generator)
    f = energy(schedule.diffuse(support, t, z), t[:, None], states[:, None, :])  # (B, M)
    target = torch.softmax(beta * support_q, -1)
    return -(target * F.log_softmax(f, -1)).sum(-1).mean()


def mse_energy_loss(energy: EnergyNet, schedule: VPSchedule, states: torch.Tensor, actions: torch.Tensor,
                    q: torch.Tensor, beta: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The baseline CEP compares against: f_phi(a_t, s, t) regressed onto beta Q(s, a_0) (biased for beta > 0)."""
    t = schedule.sample_time(actions.shape[0], actions.device, generator)
    z = torch.randn(actions.shape, device=actions.device, generator=generator)
    f = energy(schedule.diffuse(actions, t, z), t, states)
    return (f - beta * q).pow(2).mean()


# ---------------------------------------------------------------- stages 2-4

@torch.inference_mode()
def generate_support(model: DiffusionModel, states: torch.Tensor, m: int, sampler: SamplerSpec, chunk: int,
                     generator: torch.Generator, progress: bool = False) -> torch.Tensor:
    """(N, M, A) samples of mu(.|s) for every state, in batched solves of about `chunk` actions."""
    from tqdm.auto import tqdm

    per = max(1, chunk // m)
    out = torch.empty((states.shape[0], m, model.action_dim), device=states.device)
    model.eval()
    for i in tqdm(range(0, states.shape[0], per), desc="support", disable=not progress, leave=False):
        out[i : i + per] = model.sample(states[i : i + per], m, sampler, generator=generator).x
    model.train()
    return out


def successor_index(observations: torch.Tensor, next_observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row of each transition's next state in cat(observations, extra): a next state that is the
    following row's observation is not stored (nor sampled) twice. Returns (index, extra states)."""
    n = observations.shape[0]
    same = torch.zeros(n, dtype=torch.bool, device=observations.device)
    same[:-1] = (next_observations[:-1] == observations[1:]).all(-1)
    index = torch.arange(1, n + 1, device=observations.device)
    extra = (~same).nonzero().squeeze(1)
    index[extra] = n + torch.arange(extra.numel(), device=observations.device)
    return index, next_observations[extra]


def train_critic(q: TwinQ, data: dict[str, torch.Tensor], support: torch.Tensor, next_index: torch.Tensor,
                 cfg: QGPOConfig, generator: torch.Generator, progress: bool = False, workdir: Path | None = None,
                 hooks: TrainHooks | None = None, fingerprint: Any = None,
                 alongside: Callable[[torch.Tensor, TwinQ], torch.Tensor] | None = None,
                 alongside_state: dict[str, Any] | None = None) -> tuple[TwinQ, dict]:
    """In-support softmax Q-learning (eq. 14) with a Polyak-averaged target; returns the target net.

    `alongside(i, q_target)`, when given, is a second update made on the same batch indices after each
    Q step (the official schedule's f_phi step); its modules and optimizer go in `alongside_state`."""
    q_target = copy.deepcopy(q).requires_grad_(False)
    opt = torch.optim.Adam(q.parameters(), lr=cfg.q_lr)
    all_states = data["all_states"]
    n = data["actions"].shape[0]

    def step(_: int) -> torch.Tensor:
        i = torch.randint(n, (cfg.q_batch,), device=support.device, generator=generator)
        j = next_index[i]
        loss = optimiser_step(opt, td_loss(q, q_target, all_states[i], data["actions"][i], data["rewards"][i],
                                           data["terminals"][i], all_states[j], support[j], cfg.gamma, cfg.beta_q))
        polyak_update(q_target, q, cfg.tau)
        if alongside is not None:
            alongside(i, q_target)
        return loss

    record = run_steps(step, cfg.q_steps, "critic", progress=progress, workdir=workdir, hooks=hooks, fingerprint=fingerprint,
                       state={"q": q, "q_target": q_target, "optimizer": opt, "generator": generator,
                              **(alongside_state or {})})
    return q_target, record


def train_energy(energy: EnergyNet, schedule: VPSchedule, states: torch.Tensor, *, loss: str, beta: float,
                 steps: int, batch: int, lr: float, generator: torch.Generator,
                 support: torch.Tensor | None = None, support_q: torch.Tensor | None = None,
                 actions: torch.Tensor | None = None, actions_q: torch.Tensor | None = None,
                 progress: bool = False, workdir: Path | None = None, hooks: TrainHooks | None = None,
                 fingerprint: Any = None, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Stage 4. CEP reads the support actions and their Q; "mse" reads dataset actions and their Q.
    `optimizer`: an Adam already stepping `energy` (the interleaved schedule's), to continue with."""
    opt = optimizer if optimizer is not None else torch.optim.Adam(energy.parameters(), lr=lr)
    n = states.shape[0]
    q_of = (lambda i: support_q[i]) if loss == "cep" else (lambda i: actions_q[i])  # noqa: E731
    step_on = energy_step(energy, opt, schedule, states, loss=loss, beta=beta, generator=generator,
                          support=support, actions=actions)

    def step(_: int) -> torch.Tensor:
        i = torch.randint(n, (batch,), device=states.device, generator=generator)
        return step_on(i, q_of(i))

    if loss not in ENERGY_LOSSES:
        raise ConfigError(f"unknown energy loss {loss!r}; choose one of {', '.join(ENERGY_LOSSES)}")
    return run_steps(step, steps, f"energy ({loss})", progress=progress, workdir=workdir, hooks=hooks, fingerprint=fingerprint,
                     state={"energy": energy, "optimizer": opt, "generator": generator})


def energy_step(energy: EnergyNet, opt: torch.optim.Optimizer, schedule: VPSchedule, states: torch.Tensor, *,
                loss: str, beta: float, generator: torch.Generator, support: torch.Tensor | None = None,
                actions: torch.Tensor | None = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """One f_phi update on batch indices i given Q_0 of the batch's support actions (CEP, (B, M)) or of
    its dataset actions (mse, (B,)): shared by the separate stage and the interleaved schedule."""
    def step(i: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        if loss == "cep":
            value = cep_loss(energy, schedule, states[i], support[i], q, beta, generator)
        else:
            value = mse_energy_loss(energy, schedule, states[i], actions[i], q, beta, generator)
        return optimiser_step(opt, value)

    return step


@torch.inference_mode()
def q_values(q: TwinQ, states: torch.Tensor, actions: torch.Tensor, chunk: int = 65_536) -> torch.Tensor:
    """min(Q1, Q2) for actions (N, A) or (N, M, A), in chunks of states."""
    per = max(1, chunk // (actions.shape[1] if actions.dim() == 3 else 1))
    return torch.cat([q(states[i : i + per], actions[i : i + per]) for i in range(0, states.shape[0], per)])


# ---------------------------------------------------------------- the algorithm

class QGPO(StagedAlgorithm):
    name = "qgpo"
    config_cls = QGPOConfig
    presets = PRESETS
    guided = True
    curve_stages = ("energy",)
    stages = STAGES
    stage_fields = _STAGE_FIELDS
    policy_stages = ("behaviour", "energy")

    def build(self, observation_dim: int, action_dim: int) -> None:
        cfg = self.config
        self.behaviour = DiffusionModel(action_dim, observation_dim, cfg.score_widths).to(self.device)
        self.q = TwinQ(action_dim, observation_dim, cfg.q_hidden, cfg.q_layers).to(self.device)
        self.energy = EnergyNet(action_dim, observation_dim, cfg.energy_hidden, cfg.energy_layers).to(self.device)
        self.q_target: TwinQ | None = None
        self._support: dict[str, torch.Tensor] = {}
        self._energy_opt: torch.optim.Optimizer | None = None  # carried from the critic stage when interleaved

    @classmethod
    def domain_overrides(cls, preset: str, family: str) -> dict[str, Any]:
        return dict(PAPER_DOMAIN_OVERRIDES.get(family, {})) if preset == "paper" else {}

    @classmethod
    def default_guidance_scales(cls, preset: str, family: str) -> tuple[float, ...] | None:
        return PAPER_GUIDANCE_SCALES.get(family) if preset == "paper" else None

    def fingerprint(self, stage: str) -> dict[str, Any]:
        """Interleaved, the critic stage trains f_phi too, so its checkpoint depends on f_phi's settings."""
        out = super().fingerprint(stage)
        if self.config.interleave and stage == "critic":
            mine = self.config.to_dict()
            out |= {k: mine[k] for k in _STAGE_FIELDS["energy"] if k != "energy_steps"}
        return out

    # -- training

    def fit(self, dataset: OfflineDataset, workdir: Path | None = None, progress: bool = False,
            hooks: TrainHooks | None = None) -> dict[str, Any]:
        self.check_dataset(dataset)
        cfg, dev = self.config, self.device
        t = dataset.transitions.to(dev)
        run = {"workdir": workdir, "hooks": hooks, "progress": progress}
        data = {"observations": t.observations, "actions": t.actions, "rewards": t.rewards,
                "terminals": t.terminals.float()}
        workdir = Path(workdir) if workdir is not None else None
        run["workdir"] = workdir
        resumed = self.resume(workdir)

        # 1. behaviour model
        if "behaviour" not in resumed:
            self.records["behaviour"] = fit_behaviour(
                self.behaviour, t.observations, t.actions, steps=cfg.behaviour_steps, batch=cfg.behaviour_batch,
                lr=cfg.behaviour_lr, generator=stage_generator(cfg.seed, "behaviour", dev),
                fingerprint=self.fingerprint("behaviour"), **run)
            self.save(workdir, "behaviour", {"behaviour": self.behaviour.state_dict()})

        # 2. support actions for every state and next state, generated once
        if "support" not in resumed:
            next_index, extra = successor_index(t.observations, t.next_observations)
            all_states = torch.cat([t.observations, extra])
            began = time.perf_counter()
            support = generate_support(self.behaviour, all_states, cfg.support_m, cfg.support_sampler,
                                       cfg.support_chunk, stage_generator(cfg.seed, "support", dev), progress)
            self.records["support"] = {"stage": "support", "states": all_states.shape[0], "m": cfg.support_m,
                                       "nfe_per_action": cfg.support_sampler.steps,
                                       "seconds": time.perf_counter() - began}
            if hooks is not None and hooks.log:
                hooks.log(f"support: {cfg.support_m} actions for each of {all_states.shape[0]} states in "
                          f"{self.records['support']['seconds']:.0f} s")
            self._support = {"support": support, "next_index": next_index, "extra_states": extra}
            self.save(workdir, "support", self._support)
        data["all_states"] = torch.cat([t.observations, self._support["extra_states"]])

        # 3. Q_0 by in-support softmax Q-learning (with f_phi on the same batches, in the official schedule)
        n = t.observations.shape[0]
        support_n = self._support["support"][:n]
        energy_inputs = ({"support": support_n} if cfg.energy_loss == "cep" else {"actions": t.actions})
        if "critic" not in resumed:
            alongside, alongside_state = None, None
            critic_gen = stage_generator(cfg.seed, "critic", dev)  # interleaved: one stream for both updates
            if cfg.interleave:
                self._energy_opt = torch.optim.Adam(self.energy.parameters(), lr=cfg.energy_lr)
                step_on = energy_step(self.energy, self._energy_opt, self.behaviour.schedule, t.observations,
                                      loss=cfg.energy_loss, beta=cfg.beta, generator=critic_gen, **energy_inputs)
                inputs = energy_inputs.get("support", t.actions)

                def alongside(i: torch.Tensor, q_target: TwinQ) -> torch.Tensor:
                    with torch.no_grad():
                        q_now = q_target(t.observations[i], inputs[i])  # targets from the Q_0 being trained
                    return step_on(i, q_now)

                alongside_state = {"energy": self.energy, "energy_optimizer": self._energy_opt}
            self.q_target, self.records["critic"] = train_critic(
                self.q, data, self._support["support"], self._support["next_index"], cfg, critic_gen,
                fingerprint=self.fingerprint("critic"), alongside=alongside, alongside_state=alongside_state, **run)
            self.save(workdir, "critic", {"q": self.q.state_dict(), "q_target": self.q_target.state_dict(),
                                          **({"energy": self.energy.state_dict(),
                                              "energy_optimizer": self._energy_opt.state_dict()} if cfg.interleave else {})})

        # 4. f_phi by contrastive energy prediction (or the mse baseline); interleaved, the steps left
        if "energy" not in resumed:
            inputs = energy_inputs.get("support", t.actions)
            q_key = "support_q" if cfg.energy_loss == "cep" else "actions_q"
            self.records["energy"] = train_energy(
                self.energy, self.behaviour.schedule, t.observations, loss=cfg.energy_loss, beta=cfg.beta,
                steps=cfg.energy_steps - (cfg.q_steps if cfg.interleave else 0), batch=cfg.energy_batch,
                lr=cfg.energy_lr, generator=stage_generator(cfg.seed, "energy", dev),
                fingerprint=self.fingerprint("energy"), optimizer=self._energy_opt if cfg.interleave else None,
                **run, **energy_inputs, **{q_key: q_values(self.q_target, t.observations, inputs)})
            self.save(workdir, "energy", {"energy": self.energy.state_dict()})
        self._support = {}  # support actions are only needed for training
        return {"stages": self.records, "resumed": sorted(resumed), "cost": self.cost}

    # -- acting

    @torch.inference_mode()
    def act(self, observations: np.ndarray, guidance_scale: float | None = None) -> np.ndarray:
        scale = self.config.guidance_scale if guidance_scale is None else guidance_scale
        if scale < 0:
            raise ConfigError(f"guidance scale must be >= 0 (0 is plain behaviour cloning), got {scale}")
        obs = self.observations(observations)
        self.behaviour.eval()
        out = self.behaviour.sample(obs, 1, self.config.sampler, self.energy, scale, self._act_generator)
        return self.clip(out.x[:, 0])

    @property
    def cost(self) -> dict[str, Any]:
        cfg = self.config
        budget = {"behaviour": cfg.behaviour_steps, "critic": cfg.q_steps, "energy": cfg.energy_steps}
        steps = {s: n for s, n in budget.items() if s in self.records}  # f_phi's count includes interleaved steps
        guided = self.config.guidance_scale != 0
        return {"gradient_steps": steps, "gradient_steps_total": sum(steps.values()),
                "nfe_per_action": self.config.sampler.steps,
                "energy_grads_per_action": self.config.sampler.steps if guided else 0,
                "support_nfe_per_action": self.config.support_sampler.steps}

    # -- checkpoints

    def restore(self, stage: str, ckpt: dict[str, Any]) -> None:
        if stage == "behaviour":
            self.behaviour.load_state_dict(ckpt["behaviour"])
        elif stage == "support":
            self._support = {k: ckpt[k] for k in ("support", "next_index", "extra_states")}
        elif stage == "critic":
            self.q.load_state_dict(ckpt["q"])
            self.q_target = copy.deepcopy(self.q).requires_grad_(False)
            self.q_target.load_state_dict(ckpt["q_target"])
            if "energy" in ckpt:  # interleaved: f_phi and its optimizer mid-way
                self.energy.load_state_dict(ckpt["energy"])
                self._energy_opt = torch.optim.Adam(self.energy.parameters(), lr=self.config.energy_lr)
                self._energy_opt.load_state_dict(ckpt["energy_optimizer"])
        else:
            self.energy.load_state_dict(ckpt["energy"])
