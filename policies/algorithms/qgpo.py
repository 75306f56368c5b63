"""QGPO: energy-guided diffusion by Contrastive Energy Prediction (Lu et al., ICML 2023).

Algorithm 1 of the paper, as stages that checkpoint separately:
  1-3. behaviour model mu(a|s), its support actions and Q_0 by in-support softmax Q-learning
       (`policies.algorithms.pretrain`, shared with the fine-tuning algorithms)           (Secs. 4.1-4.2, eq. 14)
  4. intermediate energy f_phi(a_t, s, t) by contrastive energy prediction:   (eq. 13)
        L = -E_{s, t} sum_i softmax_i(beta Q_0(s, a^i)) log softmax_i f_phi(a_t^i, s, t)
     (or the "mse" baseline: regress f_phi(a_t, s, t) onto beta Q_0(s, a) for dataset actions)
With `interleave` (the official code's schedule, the paper preset's), stages 3 and 4 share their first
q_steps batches: each batch updates Q_0, then f_phi against the Q_0 being trained; f_phi then goes on alone.
Acting samples pi(a|s) ∝ mu(a|s) exp(beta Q_0(s, a)) with the guided score
    score_theta(a_t, s, t) + scale * grad_a f_phi(a_t, s, t),   scale = 1 being exact.

The paper preset is the official code's settings (beta 3, beta_Q 1, M 16 (32 on AntMaze), 15-step second-order
DPM-Solver, the interleaved schedule, the official grid of scales). The cpu preset keeps the method and changes
sizes and budgets, measured on one core: the score network (256, 128, 64) and the critic's and energy's width 128
(the official sizes cost about 4x a step); behaviour batch 256 at lr 3e-4 for 20k steps (official 4096 at 1e-4
for 600k), M = 8 support actions from a 6-step solver (the support stage costs states x M x steps), Q_0 40k
steps and f_phi 5k, one after the other (the official schedule trains f_phi on every critic batch), and the
support actions clamped into the action box (`support_clip`: the official code backs up Q_0 at whatever the
sampler draws, past the box too). Why those
budgets: results/budgets.md; at 10k critic steps Q_0 sat at under half its fixed point and its guidance made
QGPO worse (policies.algorithms.pretrain's cpu preset).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import math

import numpy as np
import torch
import torch.nn.functional as F

from envs.dataset import OfflineDataset
from policies import config as cfg_tools
from policies.errors import ConfigError
from policies.core.acting import ACTING_PATHS, GuidedActor
from policies.core.networks import EnergyNet, TwinQ
from policies.algorithms.pretrain import (PRETRAIN_FIELDS, PRETRAIN_PRESETS, PretrainConfig, PretrainedAlgorithm, generate_support,
                               in_support_value, pretrain_settings, successor_index, td_loss, train_critic)
from policies.core.critics import probe_index, q_values
from policies.core.samplers import SamplerSpec
from policies.core.schedule import VPSchedule
from policies.core.training import TrainHooks, optimiser_step, run_steps, stage_generator

__all__ = ["QGPO", "QGPOConfig", "cep_loss", "mse_energy_loss", "train_energy", "generate_support", "in_support_value",
           "q_values", "successor_index", "td_loss", "train_critic"]

ENERGY_LOSSES = ("cep", "mse")


@dataclass(frozen=True)
class QGPOConfig(PretrainConfig):
    """Defaults are the paper's (the "paper" preset); see `PRESETS` for the others. The behaviour and
    critic fields are `PretrainConfig`'s."""

    energy_hidden: int = 256
    energy_layers: int = 4
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
    # how actions are computed, not what they are (equal up to float rounding): "plain" (DiffusionModel.sample),
    # "lean" (policies.core.acting: all evaluations' time-only terms and conditioning in one product per call),
    # "compiled" (lean with its solver step compiled by torch.compile, a one-off compile per batch size)
    acting: str = "lean"

    def __post_init__(self) -> None:
        self.check_pretrain("qgpo")
        cfg_tools.check_bounds(self, "qgpo", at_least_one=("energy_hidden", "energy_layers", "energy_batch"),
                               non_negative=("energy_steps",), positive=("energy_lr",))
        if self.beta < 0:
            raise ConfigError(f"qgpo: beta must be >= 0, got {self.beta}")
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
        if not isinstance(self.sampler, SamplerSpec):
            raise ConfigError("qgpo: sampler must be a SamplerSpec")
        if self.acting not in ACTING_PATHS:
            raise ConfigError(f"qgpo: unknown acting {self.acting!r}; choose one of {', '.join(ACTING_PATHS)}")


def _preset(name: str, **energy: Any) -> QGPOConfig:
    return QGPOConfig(**{**pretrain_settings(PRETRAIN_PRESETS[name]), **energy})


PRESETS: dict[str, QGPOConfig] = {
    "paper": _preset("paper", interleave=True),
    "cpu": _preset("cpu", energy_hidden=128, energy_steps=5_000, energy_batch=128, interleave=False),
    "tiny": _preset("tiny", energy_hidden=32, energy_steps=50, energy_batch=16, sampler=SamplerSpec(steps=4),
                    interleave=False),
}
# `diffbench quick`: two seeds at once, one core each, in about 12 minutes with the dataset
PRESETS["quick"] = _preset("quick", energy_hidden=128, energy_steps=3_000, energy_batch=128, interleave=False)

# The official per-domain settings (train_critic.py of the CEP code): more support actions on AntMaze,
# and the guidance scales its evaluation sweeps.
PAPER_DOMAIN_OVERRIDES = {"antmaze": {"support_m": 32}}
PAPER_GUIDANCE_SCALES = {"locomotion": (0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 10.0), "antmaze": (1.0, 1.5, 2.0, 2.5, 3.0, 4.0)}

# Which config fields each stage's result depends on (with those of the stages before it).
STAGES = ("behaviour", "support", "critic", "energy")
_STAGE_FIELDS = {
    **PRETRAIN_FIELDS,
    "energy": ("energy_hidden", "energy_layers", "energy_steps", "energy_batch", "energy_lr", "beta", "energy_loss"),
}


# ---------------------------------------------------------------- the energy's losses (eq. 13)

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


# ---------------------------------------------------------------- can the guidance learn anything here?

NEAR_UNIFORM = 0.95  # a CEP target whose mean entropy is above this share of log M barely prefers any support action


def guidance_check(support_q: torch.Tensor, beta: float, energy_loss: float | None, loss: str = "cep") -> dict[str, Any]:
    """What the CEP target softmax_i(beta Q_0(s, a^i)) over each state's M support actions (`support_q`, (P, M))
    leaves the energy to learn, and how much f_phi learned of it.

    The CEP loss is a cross-entropy against that target: at least its entropy H (f_phi exact), log M for an f_phi
    that prefers nothing. A target near log M (beta Q_0 nearly equal over the support) gives guidance nothing to
    learn; a loss near log M over a sharper target means f_phi did not learn it. `learned` is
    (log M - loss) / (log M - H): 1 exact, 0 nothing (the loss averages over diffusion times, where a_t blurs the
    actions apart, so even a perfect f_phi stays above H)."""
    logits = beta * support_q.double()
    m = support_q.shape[-1]
    entropy = -(torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum(-1)
    spread = logits.max(-1).values - logits.min(-1).values
    log_m, h = math.log(m), float(entropy.mean())
    learned = None
    if loss == "cep" and energy_loss is not None and log_m - h > 1e-6:
        learned = (log_m - energy_loss) / (log_m - h)
    return {"support_m": m, "beta": beta, "beta_q_spread_median": float(spread.median()),
            "beta_q_spread_mean": float(spread.mean()), "target_entropy": h, "log_m": log_m,
            "entropy_share": h / log_m if m > 1 else 1.0, "energy_loss": energy_loss, "learned": learned,
            "near_uniform": bool(m < 2 or h > NEAR_UNIFORM * log_m)}


FIT_TIMES = (0.01, 0.1, 0.3)  # diffusion times at which f_phi's fit is read: the sampler's last steps, and earlier


@torch.no_grad()
def energy_fit_by_time(energy: EnergyNet, schedule: VPSchedule, states: torch.Tensor, support: torch.Tensor,
                       support_q: torch.Tensor, beta: float, times: Sequence[float] = FIT_TIMES,
                       seed: int = 0) -> list[dict[str, float]]:
    """f_phi against its target at fixed diffusion times: the CEP loss there, and how f_phi ranks each state's
    support actions against beta Q_0 (mean over states of their correlation across the M actions). The loss
    `guidance_check` reads averages over all times, where large t blurs the actions apart; near t = 0, where the
    sampler's last steps act, an f_phi that learned its target ranks the support as Q_0 does."""
    generator = torch.Generator(device=support.device).manual_seed(seed)
    target = torch.softmax(beta * support_q, -1)
    q_centred = support_q - support_q.mean(-1, keepdim=True)
    out = []
    for time in times:
        t = torch.full((support.shape[0],), float(time), device=support.device)
        z = torch.randn(support.shape, device=support.device, generator=generator)
        f = energy(schedule.diffuse(support, t, z), t[:, None], states[:, None, :])
        f_centred = f - f.mean(-1, keepdim=True)
        corr = (f_centred * q_centred).sum(-1) / (f_centred.norm(dim=-1) * q_centred.norm(dim=-1)).clamp_min(1e-12)
        out.append({"t": float(time), "loss": float(-(target * F.log_softmax(f, -1)).sum(-1).mean()),
                    "rank_correlation": float(corr.mean()), "f_spread": float(f.std(-1).mean()),
                    "beta_q_spread": float((beta * support_q).std(-1).mean())})
    return out


def describe_guidance(check: dict[str, Any]) -> str:
    """One line for the run's log."""
    line = (f"guidance check: beta Q_0 spans {check['beta_q_spread_median']:.2f} (median) over a state's "
            f"{check['support_m']} support actions; the CEP target's entropy is {check['target_entropy']:.3f} of "
            f"log M = {check['log_m']:.3f}")
    if check["energy_loss"] is not None:
        line += f"; f_phi's final loss {check['energy_loss']:.3f}"
    if check["learned"] is not None:
        line += f" ({check['learned']:.0%} of the way from log M to the target's entropy)"
    if check.get("fit_by_time"):
        first = check["fit_by_time"][0]
        line += (f"; at t = {first['t']:g} f_phi ranks the support as beta Q_0 does with correlation "
                 f"{first['rank_correlation']:.2f}, spread {first['f_spread']:.2f} against {first['beta_q_spread']:.2f}")
    if check["near_uniform"]:
        line += (" -- NEAR-UNIFORM target: beta Q_0 hardly tells the support actions apart, so the guidance has "
                 "little to learn and s > 0 acts much as s = 0 (or on noise)")
    return line


# ---------------------------------------------------------------- the algorithm

class QGPO(PretrainedAlgorithm):
    name = "qgpo"
    description = ("QGPO / CEP (Lu et al., ICML 2023): a diffusion behaviour model guided by an energy learned "
                   "by contrastive energy prediction from an in-support softmax Q")
    budget_fields = ("behaviour_steps", "q_steps", "energy_steps")
    config_cls = QGPOConfig
    presets = PRESETS
    guided = True
    curve_stages = ("behaviour", "energy")  # s = 0 (diffusion BC) is the behaviour model's policy
    stages = STAGES
    stage_fields = _STAGE_FIELDS
    policy_stages = ("behaviour", "energy")

    def build(self, observation_dim: int, action_dim: int) -> None:
        self.build_pretrained(observation_dim, action_dim)
        cfg = self.config
        self.energy = EnergyNet(action_dim, observation_dim, cfg.energy_hidden, cfg.energy_layers).to(self.device)
        self._energy_opt: torch.optim.Optimizer | None = None  # carried from the critic stage when interleaved
        self._actors: dict[float, GuidedActor] = {}  # per guidance scale; they read the current weights

    @classmethod
    def domain_overrides(cls, preset: str, family: str) -> dict[str, Any]:
        return dict(PAPER_DOMAIN_OVERRIDES.get(family, {})) if preset == "paper" else {}

    @classmethod
    def default_guidance_scales(cls, preset: str, family: str) -> tuple[float, ...] | None:
        return PAPER_GUIDANCE_SCALES.get(family) if preset == "paper" else None

    def curve_scale(self, stage: str) -> float | None:
        return 0.0 if stage == "behaviour" else self.config.guidance_scale

    def policy_stage(self, scale: float | None) -> str | None:
        return "behaviour" if scale == 0 else "energy"

    @classmethod
    def stage_fingerprint(cls, config: QGPOConfig, stage: str) -> dict[str, Any]:
        """Interleaved, the critic stage trains f_phi too, so its checkpoint depends on f_phi's settings."""
        out = super().stage_fingerprint(config, stage)
        if config.interleave and stage == "critic":
            mine = config.identity()  # as the base fingerprint reads it: LATER settings at their old value left out
            out |= {k: mine[k] for k in _STAGE_FIELDS["energy"] if k != "energy_steps" and k in mine}
        return out

    # -- training

    def fit(self, dataset: OfflineDataset, workdir: Path | None = None, progress: bool = False,
            hooks: TrainHooks | None = None) -> dict[str, Any]:
        self.check_dataset(dataset)
        cfg, dev = self.config, self.device
        t = dataset.transitions.to(dev)
        workdir = Path(workdir) if workdir is not None else None
        self.resume(workdir)
        n = t.observations.shape[0]

        def interleaved(critic_gen: torch.Generator) -> tuple[Callable, dict[str, Any]]:
            """The official schedule: each critic batch also updates f_phi against the Q_0 being trained."""
            self._energy_opt = torch.optim.Adam(self.energy.parameters(), lr=cfg.energy_lr)
            inputs, kw = self._energy_inputs(t.actions, n)
            step_on = energy_step(self.energy, self._energy_opt, self.behaviour.schedule, t.observations,
                                  loss=cfg.energy_loss, beta=cfg.beta, generator=critic_gen, **kw)

            def alongside(i: torch.Tensor, q_target: TwinQ) -> torch.Tensor:
                with torch.no_grad():
                    q_now = q_target(t.observations[i], inputs[i])  # targets from the Q_0 being trained
                return step_on(i, q_now)

            return alongside, {"energy": self.energy, "energy_optimizer": self._energy_opt}

        # 1-3. behaviour model, support actions, Q_0 (with f_phi on the same batches, in the official schedule)
        self.fit_pretrained(t, workdir, hooks, progress, critic_alongside=interleaved if cfg.interleave else None)

        # 4. f_phi by contrastive energy prediction (or the mse baseline); interleaved, the steps left
        with self.stage("energy", workdir, hooks) as todo:
            if todo:
                inputs, kw = self._energy_inputs(t.actions, n)
                q_key = "support_q" if cfg.energy_loss == "cep" else "actions_q"
                self.records["energy"] = train_energy(
                    self.energy, self.behaviour.schedule, t.observations, loss=cfg.energy_loss, beta=cfg.beta,
                    steps=cfg.energy_steps - (cfg.q_steps if cfg.interleave else 0), batch=cfg.energy_batch,
                    lr=cfg.energy_lr, generator=stage_generator(cfg.seed, "energy", dev),
                    fingerprint=self.fingerprint("energy"), optimizer=self._energy_opt if cfg.interleave else None,
                    workdir=workdir, hooks=hooks, progress=progress,
                    **kw, **{q_key: q_values(self.q_target, t.observations, inputs)})
                self.records["energy"]["check"] = self.check_guidance(t.observations)
                self.save(workdir, "energy", {"energy": self.energy.state_dict()})
        record = self.records.setdefault("energy", {})
        if "check" not in record:  # a checkpoint from before the check
            record["check"] = self.check_guidance(t.observations)
        if hooks is not None and hooks.log:
            hooks.log(describe_guidance(record["check"]))
        self._support = {}  # support actions are only needed for training
        return {"stages": self.records, "resumed": sorted(self.restored), "cost": self.cost}

    def check_guidance(self, states: torch.Tensor) -> dict[str, Any]:
        """`guidance_check` on the support actions of a seeded probe of the dataset's `states`."""
        idx = probe_index(states.shape[0], seed=self.config.seed).to(self.device)
        support = self._support["support"][idx]  # the dataset's states come first among the supported ones
        support_q = q_values(self.q_target, states[idx], support)
        check = guidance_check(support_q, self.config.beta, self.records.get("energy", {}).get("final_loss"),
                               self.config.energy_loss)
        if self.config.energy_loss == "cep":
            check["fit_by_time"] = energy_fit_by_time(self.energy, self.behaviour.schedule, states[idx], support,
                                                      support_q, self.config.beta, seed=self.config.seed)
        return check

    def _energy_inputs(self, actions: torch.Tensor, n: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """What f_phi trains on: the dataset states' support actions (CEP) or their dataset actions (mse)."""
        if self.config.energy_loss == "cep":
            support = self._support["support"][:n]
            return support, {"support": support}
        return actions, {"actions": actions}

    def critic_extras(self) -> dict[str, Any]:
        if not self.config.interleave:
            return {}
        return {"energy": self.energy.state_dict(), "energy_optimizer": self._energy_opt.state_dict()}

    # -- acting

    @torch.inference_mode()
    def act(self, observations: np.ndarray, guidance_scale: float | Sequence[float] | None = None) -> np.ndarray:
        """With K scales, `observations` are K equal blocks, block k acted on at scale k with the noise a call on
        that block alone would draw (the generator advances once): one batched call evaluates K scales."""
        scales = [self.config.guidance_scale if guidance_scale is None else guidance_scale]
        if not np.isscalar(guidance_scale) and guidance_scale is not None:
            scales = [float(s) for s in guidance_scale]
        if any(s < 0 for s in scales):
            raise ConfigError(f"guidance scale must be >= 0 (0 is plain behaviour cloning), got {min(scales)}")
        obs = self.observations(observations)
        if obs.shape[0] % len(scales):
            raise ConfigError(f"{obs.shape[0]} observations do not split into one equal block per guidance scale "
                              f"({len(scales)} scales)")
        self.behaviour.eval()
        if len(scales) == 1:
            return self.clip(self._act_at(obs, scales[0]))
        if self.config.acting == "plain" or self.config.sampler.stochastic:  # blocks could not share the noise
            start, blocks = self._act_generator.get_state(), []
            for obs_k, scale in zip(obs.chunk(len(scales)), scales):
                self._act_generator.set_state(start)
                blocks.append(self._act_at(obs_k, scale))
            return self.clip(torch.cat(blocks))
        rows = torch.tensor(scales, device=obs.device).repeat_interleave(obs.shape[0] // len(scales))
        return self.clip(self._actor(1.0)(obs, self._act_generator, scales=rows, blocks=len(scales)))

    def _act_at(self, obs: torch.Tensor, scale: float) -> torch.Tensor:
        if self.config.acting == "plain":
            return self.behaviour.sample(obs, 1, self.config.sampler, self.energy, scale, self._act_generator).x[:, 0]
        return self._actor(scale)(obs, self._act_generator)

    def _actor(self, scale: float) -> GuidedActor:
        if scale not in self._actors:
            self._actors[scale] = GuidedActor(self.behaviour, self.energy, self.config.sampler, scale, self.config.acting)
        return self._actors[scale]

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
        if self.restore_pretrained(stage, ckpt):
            if stage == "critic" and "energy" in ckpt:  # interleaved: f_phi and its optimizer mid-way
                self.energy.load_state_dict(ckpt["energy"])
                self._energy_opt = torch.optim.Adam(self.energy.parameters(), lr=self.config.energy_lr)
                self._energy_opt.load_state_dict(ckpt["energy_optimizer"])
        else:
            self.energy.load_state_dict(ckpt["energy"])
