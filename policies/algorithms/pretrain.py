"""The stages every diffusion-policy method here starts from: a behaviour model mu_theta(a|s) and Q_0.

QGPO guides mu_theta with an energy trained from Q_0; DDPO, CTRL and DxMI fine-tune mu_theta toward
Q_0. Both stages are QGPO's (Lu et al. 2023, Sec. 4.1-4.2):
  1. behaviour  mu_theta(a|s) by denoising score matching
  2. support    M samples of mu_theta for every dataset state and next state
  3. critic     Q_0 by in-support softmax Q-learning (eq. 14):
                  V(s') = sum_i softmax_i(beta_Q Q(s', a^i)) Q(s', a^i),  a^i ~ mu_theta(.|s')
Their checkpoints belong to no one algorithm ("shared"): a sweep of qgpo and ddpo on one dataset and
seed trains them once, keyed by the config fields below (`PRETRAIN_FIELDS`).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch

from envs.families import CONTINUING_FAMILIES, family
from policies import config as cfg_tools
from policies.core.diffusion import LR_SCHEDULES, DiffusionModel, fit_behaviour
from policies.errors import ConfigError
from policies.core.acting import GuidedActor
from policies.core.fqe import CriticSpec
from policies.core.critics import (TAIL_TOLERANCE, CriticProbe, critic_check, describe_check, mc_probe, probe_index,  # noqa: F401
                                   q_values, value_bounds)
from policies.core.networks import ScoreNet, TwinQ
from policies.core.samplers import SamplerSpec
from policies.algorithms.staged import StagedAlgorithm
from policies.core.training import TrainHooks, optimiser_step, polyak_update, run_steps, stage_generator


@dataclass(frozen=True)
class PretrainConfig(cfg_tools.Config):
    """Settings of the shared stages; the defaults are QGPO's paper settings."""

    score_widths: tuple[int, ...] = (512, 256, 128)
    q_hidden: int = 256
    q_layers: int = 3
    # stage 1: behaviour model
    behaviour_steps: int = 600_000
    behaviour_batch: int = 4096
    behaviour_lr: float = 1e-4
    # "constant" (the official code's) or "cosine" (to 0 over behaviour_steps, as IDQL's actor): the last iterate
    # of a constant rate carries its minibatch noise, which a short budget has no steps to average away
    behaviour_lr_schedule: str = "constant"
    # stage 2: support actions
    support_m: int = 16  # 32 for AntMaze in the paper
    support_sampler: SamplerSpec = SamplerSpec()
    support_chunk: int = 65_536  # actions per batched solve
    # the support actions clamped into the action box, as acting clamps them: Q_0 then backs up the values of
    # actions the policy can take, not extrapolations past the box (an under-trained mu_theta samples far outside
    # it, and Q_0 diverges on them; walker2d-medium-small at 30k steps: 8.5% of components outside). The official
    # code leaves them as sampled (the paper and quick presets too)
    support_clip: bool = False
    # stage 3: Q_0
    q_steps: int = 500_000
    q_batch: int = 256
    q_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    beta_q: float = 1.0
    # QGPO's official schedule trains its energy on the critic's batches (see policies.algorithms.qgpo); the
    # critic it makes is then QGPO's own, shared with no other algorithm
    interleave: bool = False
    seed: int = 0
    device: str = "auto"

    LATER: ClassVar[dict[str, Any]] = {"behaviour_lr_schedule": "constant"}

    def check_pretrain(self, algorithm: str) -> None:
        cfg_tools.check_bounds(
            self, algorithm, at_least_one=("q_hidden", "q_layers", "behaviour_batch", "support_m", "support_chunk", "q_batch"),
            non_negative=("behaviour_steps", "q_steps"), positive=("behaviour_lr", "q_lr"), unit_interval=("gamma",))
        if not self.score_widths or min(self.score_widths) < 1:
            raise ConfigError(f"{algorithm}: score_widths must be positive widths, got {self.score_widths}")
        if not 0 < self.tau <= 1:
            raise ConfigError(f"{algorithm}: tau must be in (0, 1], got {self.tau}")
        if self.beta_q < 0:
            raise ConfigError(f"{algorithm}: beta_q must be >= 0, got {self.beta_q}")
        if not isinstance(self.support_sampler, SamplerSpec):
            raise ConfigError(f"{algorithm}: support_sampler must be a SamplerSpec")
        if self.behaviour_lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"{algorithm}: unknown behaviour_lr_schedule {self.behaviour_lr_schedule!r}; choose one of "
                              f"{', '.join(LR_SCHEDULES)}")


def pretrain_settings(config: PretrainConfig) -> dict[str, Any]:
    """The shared stages' fields of any config built on `PretrainConfig` (to build presets that share them)."""
    return {f.name: getattr(config, f.name) for f in fields(PretrainConfig)}


def behaviour_settings(preset: str) -> dict[str, Any]:
    """The behaviour stage's fields at `preset` (but the seed), for an algorithm that shares mu_theta alone."""
    return {k: getattr(PRETRAIN_PRESETS[preset], k) for k in PRETRAIN_FIELDS["behaviour"] if k != "seed"}


# the presets' shared stages; each algorithm's presets start from these, so that they share checkpoints
PRETRAIN_PRESETS: dict[str, PretrainConfig] = {
    "paper": PretrainConfig(),
    # a -small dataset (100k transitions) in about a quarter of an hour on one core. The budgets come from learning
    # curves over three seeds (results/budgets.md): diffusion BC scores 32.4 +- 0.8 at 10k behaviour steps and
    # 32.1 +- 1.9 at 20k on hopper-medium-small (the data's own episodes: 33.3), 24.4 +- 0.7 at 20k on
    # walker2d-medium-small (data 26.9); Q_0 trails its fixed point by the target network's lag (tau = 0.005: about
    # 1 - 0.99^(steps / 200) of it), so at 10k steps it stood at 45% (walker2d: 68 against the data's 150), a myopic
    # critic whose guidance made QGPO worse; at 40k it reaches 128.6 against 150 on walker2d (correlation 0.86).
    # On hopper, at 40k, one seed of three left the range the rewards allow (results/competence.md).
    "cpu": PretrainConfig(score_widths=(256, 128, 64), q_hidden=128, behaviour_steps=20_000, behaviour_batch=256,
                          behaviour_lr=3e-4, support_m=8, support_sampler=SamplerSpec(steps=6), support_clip=True,
                          q_steps=40_000),
    # seconds, for tests: every stage runs, nothing converges
    "tiny": PretrainConfig(score_widths=(32, 16, 8), q_hidden=32, behaviour_steps=50, behaviour_batch=64, support_m=4,
                           support_sampler=SamplerSpec(steps=4), q_steps=50, q_batch=32),
}
# `diffbench quick` (the quick start's 12 minutes on two cores): small networks, few steps, a 4-step solver for the
# support actions; spelled out, so that the cpu preset's budgets can move without moving the quick start
PRETRAIN_PRESETS["quick"] = PretrainConfig(score_widths=(256, 128, 64), q_hidden=128, behaviour_steps=3_000,
                                           behaviour_batch=256, behaviour_lr=3e-4, support_m=8,
                                           support_sampler=SamplerSpec(steps=4), q_steps=6_000)

PRETRAIN_STAGES = ("behaviour", "support", "critic")
PRETRAIN_FIELDS = {
    "behaviour": ("score_widths", "behaviour_steps", "behaviour_batch", "behaviour_lr", "behaviour_lr_schedule", "seed"),
    "support": ("support_m", "support_sampler", "support_clip"),
    "critic": ("q_hidden", "q_layers", "q_steps", "q_batch", "q_lr", "gamma", "tau", "beta_q", "interleave"),
}


# ---------------------------------------------------------------- the critic's loss (eq. 14)

def in_support_value(q_next: torch.Tensor, beta_q: float) -> torch.Tensor:
    """V(s') = sum_i softmax_i(beta_Q Q(s', a^i)) Q(s', a^i) over the support actions (last dim)."""
    return (torch.softmax(beta_q * q_next, -1) * q_next).sum(-1)


def td_loss(q: TwinQ, q_target: TwinQ, states: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor,
            terminals: torch.Tensor, next_states: torch.Tensor, next_support: torch.Tensor, gamma: float,
            beta_q: float) -> torch.Tensor:
    """Twin-Q regression onto r + gamma (1 - done) V(s'), V the in-support softmax value (eq. 14)."""
    with torch.no_grad():
        y = rewards + gamma * (1.0 - terminals) * in_support_value(q_target(next_states, next_support), beta_q)
    return 0.5 * q.regression_loss(states, actions, y)


# ---------------------------------------------------------------- stages 2 and 3

@torch.inference_mode()
def generate_support(model: DiffusionModel, states: torch.Tensor, m: int, sampler: SamplerSpec, chunk: int,
                     generator: torch.Generator, progress: bool = False) -> torch.Tensor:
    """(N, M, A) samples of mu(.|s) for every state, in batched solves of about `chunk` actions."""
    from tqdm.auto import tqdm

    per = max(1, chunk // m)
    out = torch.empty((states.shape[0], m, model.action_dim), device=states.device)
    model.eval()
    if isinstance(model.net, ScoreNet):  # the lean path: each state's conditioning once, not once per action
        draw = GuidedActor(model, None, sampler, 0.0)
        sample = lambda s: draw(s, generator, n=m).view(s.shape[0], m, -1)  # noqa: E731
    else:
        sample = lambda s: model.sample(s, m, sampler, generator=generator).x  # noqa: E731
    for i in tqdm(range(0, states.shape[0], per), desc="support", disable=not progress, leave=False):
        out[i : i + per] = sample(states[i : i + per])
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
                 cfg: PretrainConfig, generator: torch.Generator, progress: bool = False, workdir: Path | None = None,
                 hooks: TrainHooks | None = None, fingerprint: Any = None,
                 alongside: Callable[[torch.Tensor, TwinQ], torch.Tensor] | None = None,
                 alongside_state: dict[str, Any] | None = None, q_target: TwinQ | None = None) -> tuple[TwinQ, dict]:
    """In-support softmax Q-learning (eq. 14) with a Polyak-averaged target; returns the target net.

    `alongside(i, q_target)`, when given, is a second update made on the same batch indices after each
    Q step (the official schedule's f_phi step); its modules and optimizer go in `alongside_state`.
    `q_target`: the target network to train (a copy of `q`), when the caller reads it during training."""
    q_target = copy.deepcopy(q).requires_grad_(False) if q_target is None else q_target
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


# ---------------------------------------------------------------- the stages as an algorithm's first three

class BehaviourAlgorithm(StagedAlgorithm):
    """An algorithm whose first stage is the shared behaviour model mu_theta (SRPO alone; the others through
    `PretrainedAlgorithm`). Its config has `PRETRAIN_FIELDS["behaviour"]` (`behaviour_settings`), and
    `build_behaviour` runs first in `build`, right after the seed, so that every algorithm's mu_theta starts from
    the same weights and trains to the same checkpoint, whichever of them trains it."""

    shared_stages: ClassVar[tuple[str, ...]] = ("behaviour",)

    def build_behaviour(self, observation_dim: int, action_dim: int) -> None:
        self.behaviour = DiffusionModel(action_dim, observation_dim, self.config.score_widths).to(self.device)

    def fit_behaviour_stage(self, t: Any, workdir: Path | None, hooks: TrainHooks | None, progress: bool) -> None:
        """Stage 1: mu_theta by denoising score matching."""
        cfg = self.config
        with self.stage("behaviour", workdir, hooks) as todo:
            if todo:
                self.records["behaviour"] = fit_behaviour(
                    self.behaviour, t.observations, t.actions, steps=cfg.behaviour_steps, batch=cfg.behaviour_batch,
                    lr=cfg.behaviour_lr, lr_schedule=cfg.behaviour_lr_schedule,
                    generator=stage_generator(cfg.seed, "behaviour", self.device),
                    fingerprint=self.fingerprint("behaviour"), workdir=workdir, hooks=hooks, progress=progress)
                self.save(workdir, "behaviour", {"behaviour": self.behaviour.state_dict()})


class PretrainedAlgorithm(BehaviourAlgorithm):
    """An algorithm whose first stages are behaviour, support and critic, shared with every other such
    algorithm (through the harness's stage store, `TrainHooks.shared_stages`)."""

    shared_stages = PRETRAIN_STAGES

    def build_pretrained(self, observation_dim: int, action_dim: int) -> None:
        cfg = self.config
        self.build_behaviour(observation_dim, action_dim)
        self.q = TwinQ(action_dim, observation_dim, cfg.q_hidden, cfg.q_layers).to(self.device)
        self.q_target: TwinQ | None = None
        self._support: dict[str, torch.Tensor] = {}

    def fit_support_stage(self, t: Any, workdir: Path | None, hooks: TrainHooks | None, progress: bool) -> None:
        """Stage 2: M samples of mu_theta for every dataset state and next state, generated once."""
        cfg = self.config
        with self.stage("support", workdir, hooks) as todo:
            if todo:
                next_index, extra = successor_index(t.observations, t.next_observations)
                all_states = torch.cat([t.observations, extra])
                began, cpu_began = time.perf_counter(), time.process_time()
                support = generate_support(self.behaviour, all_states, cfg.support_m, cfg.support_sampler,
                                           cfg.support_chunk, stage_generator(cfg.seed, "support", self.device), progress)
                if cfg.support_clip:
                    support = self.bounded(support)
                self.records["support"] = {"stage": "support", "states": all_states.shape[0], "m": cfg.support_m,
                                           "nfe_per_action": cfg.support_sampler.steps,
                                           "seconds": time.perf_counter() - began,
                                           "cpu_seconds": time.process_time() - cpu_began}
                if hooks is not None and hooks.log:
                    hooks.log(f"support: {cfg.support_m} actions for each of {all_states.shape[0]} states in "
                              f"{self.records['support']['seconds']:.0f} s")
                self._support = {"support": support, "next_index": next_index, "extra_states": extra}
                self.save(workdir, "support", self._support)

    def fit_pretrained(self, t: Any, workdir: Path | None, hooks: TrainHooks | None, progress: bool,
                       critic_alongside: Callable[[torch.Generator], tuple[Callable, dict[str, Any]]] | None = None,
                       ) -> dict[str, torch.Tensor]:
        """Stages 1-3 on transitions `t` (on the device), each unless restored; returns the training data.

        `critic_alongside(generator)` -> (alongside, its state): a second update on the critic's batches."""
        cfg, dev = self.config, self.device
        run = {"workdir": workdir, "hooks": hooks, "progress": progress}
        data = {"observations": t.observations, "actions": t.actions, "rewards": t.rewards,
                "terminals": t.terminals.float()}
        self.fit_behaviour_stage(t, workdir, hooks, progress)
        self.fit_support_stage(t, workdir, hooks, progress)
        data["all_states"] = torch.cat([t.observations, self._support["extra_states"]])
        with self.stage("critic", workdir, hooks) as todo:
            if todo:
                critic_gen = stage_generator(cfg.seed, "critic", dev)  # interleaved: one stream for both updates
                alongside, alongside_state = critic_alongside(critic_gen) if critic_alongside else (None, None)
                self.q_target = copy.deepcopy(self.q).requires_grad_(False)
                trend: list[dict[str, Any]] = []
                self.q_target, self.records["critic"] = train_critic(
                    self.q, data, self._support["support"], self._support["next_index"], cfg, critic_gen,
                    fingerprint=self.fingerprint("critic"), alongside=alongside, alongside_state=alongside_state,
                    q_target=self.q_target, **{**run, "hooks": self.checking(hooks, "critic", t, trend)})
                self.records["critic"]["check"] = self.check_critic(t) | {"trend": trend}
                self.save(workdir, "critic", {"q": self.q.state_dict(), "q_target": self.q_target.state_dict(),
                                              **self.critic_extras()})
        record = self.records.setdefault("critic", {})
        if "returns" not in record.get("check", {}):  # a checkpoint from before the check, or before its conventions
            record["check"] = self.check_critic(t)
        if hooks is not None and hooks.log:
            hooks.log(describe_check(record["check"]))
        return data

    def critic_spec(self) -> CriticSpec | None:
        cfg = self.config
        return CriticSpec(self.q, False, cfg.q_lr, cfg.q_batch, cfg.tau, cfg.gamma) if "critic" in self.stages else None

    def q_function(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
        return self.q_target  # None where the critic stage is not one of this algorithm's (CTRL, SfBC)

    def continuing(self) -> bool:
        """Whether the data's returns run on across truncations (maze data: one stream cut at each goal reached)."""
        return bool(self.data_tag) and family(self.data_tag["id"]) in CONTINUING_FAMILIES

    def check_critic(self, t: Any) -> dict[str, Any]:
        return self.critic_probe(t).check(self.q_target)

    def critic_probe(self, t: Any) -> CriticProbe:
        """The probe of the data `t`, drawn once per dataset."""
        probe = getattr(self, "_probe", None)
        if probe is None or probe.transitions is not t:
            self._probe = probe = CriticProbe(t, self.config.gamma, seed=self.config.seed, continuing=self.continuing())
        return probe

    def checking(self, hooks: TrainHooks | None, stage: str, t: Any, trend: list[dict[str, Any]]) -> TrainHooks | None:
        """`hooks` with the critic check also made at each of the stage's evaluations, into `trend` (the critic's
        course: whether Q_0 settles, keeps growing, or leaves the allowed range, and when; a stage resumed mid-way
        holds the checks made since)."""
        if hooks is None or hooks.on_eval is None:
            return hooks
        inner = hooks.on_eval

        def on_eval(at: str, step: int) -> None:
            if at == stage:
                point = self.critic_probe(t).point(self.q_target, step=step)
                trend.append(point)
                if hooks.log:
                    corr = point["mc_correlation"]
                    hooks.log(f"{stage} step {step}: Q_0 on dataset actions {point['q_data_mean']:.1f}"
                              + (f", correlation {corr:.2f}" if corr is not None else "")
                              + (" -- OUTSIDE what the rewards allow" if point["outside_bounds"] else ""))
            inner(at, step)

        return dataclasses.replace(hooks, on_eval=on_eval)

    def critic_extras(self) -> dict[str, Any]:
        """What else the critic stage's checkpoint holds (QGPO's interleaved energy)."""
        return {}

    def restore_pretrained(self, stage: str, ckpt: dict[str, Any]) -> bool:
        """Restore a shared stage; False for a stage that is not one."""
        if stage == "behaviour":
            self.behaviour.load_state_dict(ckpt["behaviour"])
        elif stage == "support":
            self._support = {k: ckpt[k] for k in ("support", "next_index", "extra_states")}
        elif stage == "critic":
            self.q.load_state_dict(ckpt["q"])
            self.q_target = copy.deepcopy(self.q).requires_grad_(False)
            self.q_target.load_state_dict(ckpt["q_target"])
        else:
            return False
        return True
