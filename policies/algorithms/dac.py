"""DAC: diffusion actor-critic (Fang et al., 2024, "Diffusion Actor-Critic: Formulating Constrained Policy
Iteration as Diffusion Noise Regression for Offline Reinforcement Learning"): the KL-constrained policy
improvement's optimum, pi* ∝ mu exp(Q / eta), learned by regressing the diffusion policy's noise onto a target
that the critic's action gradient shifts ("soft Q-guidance").

Per step, one batch (s, a, r, s', d), as the reference implementation (FlowRL's agents/offline/dac.py) orders it:
  critic  a'_1..N ~ pi_ema(.|s') (N = 10), V' = mean_j of each member's Q'_e(s', a'_j)   (max_j with `max_q_backup`)
          y = r + gamma (1 - d) [ mean_e V'_e - rho std_e V'_e ]          (the ensemble's lower confidence bound)
          min  mean_e (Q_e(s, a) - y)^2                                       (gradient norm clipped)
  actor   x_i = sqrt(abar_i) a + sqrt(1 - abar_i) z,  g = grad_x mean_e Q'_e(s, x_i) / mean |Qbar'(s, a)|
          min  eta || eps_theta(x_i, i, s) - z ||^2  +  sqrt(1 - abar_i) g . eps_theta(x_i, i, s)   (both averaged
          over batch and action dimensions), whose minimiser is the behaviour's noise shifted by the critic:
            eps* = E[z | x_i] - sqrt(1 - abar_i) g / (2 eta)
          i.e. the behaviour's score plus grad Q / (2 eta |Q|) at every noise level (tests/test_dac.py)
  eta     with `eta_lr` > 0, eta += eta_lr clip(L_bc - eta_threshold, -1, 1), kept in [eta_min, eta_max]
  targets Polyak averaging of the critics every step, of the actor (EMA) every 5 steps after the first 1000;
          both learning rates decay by a cosine to 0 over the run
  acting  10 draws of pi_theta, the one of highest mean_e Q'_e (greedy)
The chain is Diffusion-QL's (5 VP levels, the x0 estimate clamped to the box: `policies.core.ddpm`, "posterior"),
the noise network its 3 x 256 Mish MLP with 64 sinusoidal time features, the critic ensemble 10 x (3 x 256 Mish).
Per-dataset settings (`dataset_overrides`), the reference scripts': rho 1.5 hopper, 1.0 walker2d, 0 halfcheetah;
eta_threshold 0.05 on hopper-medium-expert, 0.1 on halfcheetah-medium-expert, else 1; AntMaze eta 0.1 fixed,
max-Q backup, rho 1 (large: 1.1 with critic lr 1e-3). PointMaze and OGBench have no reference setting; there DAC
runs with the locomotion defaults (rho 1, eta 1 adapted at threshold 1; not tuned on the scored data).
Where this differs from the reference: the rewards follow the suite's protocol (the reference scales locomotion
rewards as IQL does, as the suite does); the time embedding's MLP is Diffusion-QL's (64 -> 128 -> 64, Mish); the
reference's DDPM sampler clips x itself where the posterior chain clamps the x0 estimate; eta steps on the noise
loss of the batch before the actor's update, where the reference's own code (Fang-Lin93/DAC) evaluates it again after.
The `cpu` preset keeps the reference's settings at 10k steps, which its own curves show to be before DAC begins to
learn (`short_of_competence`): its rows are measured and shown, never ranked. Fixing eta instead (a setting the
reference uses on AntMaze) scored higher on walker2d-medium-small (13.5 at 1, 12.4 at 100, against 5.0 adapted, seed
0), but was tried with the scored data in hand, so the preset does not take it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from envs.families import family, locomotion_task
from policies import config as cfg_tools
from policies.algorithms.diffusion_ql import DiffusionActorCritic
from policies.core.ddpm import DiscreteDiffusion
from policies.core.networks import DQLNoiseNet, EnsembleQ
from policies.core.selection import select
from policies.core.training import TrainHooks, optimiser_step, polyak_update, run_steps, stage_generator
from policies.errors import ConfigError

EPS = 1e-6


@dataclass(frozen=True)
class DACConfig(cfg_tools.Config):
    """Defaults: the reference's D4RL locomotion settings (dac.yaml with the locomotion script's eta_lr)."""

    hidden: int = 256
    layers: int = 3
    time_dim: int = 64
    diffusion_steps: int = 5
    beta_max: float = 10.0
    q_hidden: int = 256
    q_layers: int = 3
    ensemble: int = 10
    steps: int = 2_000_000
    batch: int = 256
    lr: float = 3e-4
    critic_lr: float = 3e-4
    grad_norm: float = 1.0  # both networks'; 0: no clipping
    gamma: float = 0.99
    tau: float = 0.005  # the critics' Polyak rate, every step
    ema_decay: float = 0.995  # the actor's EMA (the reference's rate 0.005), every `ema_every` steps
    ema_every: int = 5
    ema_start: int = 1000
    rho: float = 1.0  # the lower confidence bound's width (hopper 1.5, halfcheetah 0)
    backup_samples: int = 10
    max_q_backup: bool = False
    eta: float = 1.0
    eta_lr: float = 0.001
    eta_threshold: float = 1.0
    eta_min: float = 0.001
    eta_max: float = 100.0
    candidates: int = 10
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        cfg_tools.check_bounds(self, "dac", at_least_one=("hidden", "layers", "time_dim", "diffusion_steps", "q_hidden",
                                                          "q_layers", "ensemble", "batch", "ema_every",
                                                          "backup_samples", "candidates"),
                               non_negative=("steps", "ema_start"), positive=("lr", "critic_lr", "beta_max", "eta_min"),
                               finite_non_negative=("grad_norm", "rho", "eta", "eta_lr", "eta_threshold", "eta_max"),
                               unit_interval=("gamma", "tau", "ema_decay"))
        if not self.eta_min <= self.eta <= self.eta_max:
            raise ConfigError(f"dac: eta must lie in [eta_min, eta_max] = [{self.eta_min}, {self.eta_max}], "
                              f"got {self.eta}")


PRESETS = {"paper": DACConfig(),
           "cpu": DACConfig(steps=10_000),
           "tiny": DACConfig(hidden=32, time_dim=16, q_hidden=32, ensemble=3, steps=40, batch=32, ema_start=10,
                             backup_samples=3, candidates=4)}

RHO = {"hopper": 1.5, "walker2d": 1.0, "halfcheetah": 0.0}
THRESHOLDS = {("hopper", "medium-expert"): 0.05, ("halfcheetah", "medium-expert"): 0.1}


def guided_noise_loss(actor: DiscreteDiffusion, critic: EnsembleQ, states: torch.Tensor, actions: torch.Tensor,
                      eta: float | torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(eta L_bc + the soft Q-guidance term, L_bc): the noise regression onto the critic-shifted target. `critic`'s
    action gradient (of the members' mean) at the noised action, over the members' mean |Q| at the data's actions,
    is held fixed."""
    x, i, z = actor.perturb(actions, generator)
    with torch.no_grad():
        q_scale = critic.members(states, actions).abs().mean() + EPS
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        grad, = torch.autograd.grad(critic(states, xg).sum(), xg)
    grad = grad / q_scale
    eps = actor.net.eps(x, i.float(), actor.net.condition(states))
    bc = (eps - z).pow(2).mean()
    guidance = ((1 - actor.abar[i])[:, None].sqrt() * grad * eps).mean()
    return eta * bc + guidance, bc.detach()


class EtaState(nn.Module):
    """The adapted eta, as a buffer: saved and restored with the stage's other state."""

    def __init__(self, eta: float):
        super().__init__()
        self.register_buffer("value", torch.tensor(float(eta)))


class DAC(DiffusionActorCritic):
    name = "dac"
    description = ("DAC (Fang et al., 2024): a diffusion policy whose noise regresses onto a target shifted by the "
                   "critic's action gradient (soft Q-guidance), with an ensemble's lower-confidence-bound critic")
    budget_fields = ("steps",)
    config_cls = DACConfig
    presets = PRESETS
    short_of_competence = {"cpu": (
        "its 10k steps come before DAC begins to learn. The reference's own walker2d-medium-v2 curves at these "
        "settings (Fang-Lin93/DAC, results/walker2d-medium-v2/20240510-153803_DACBC<=1.0|QTar=lcb|rho=1.0|sota, "
        "seeds 1 and 6 of 8) score 3.5 and -0.2 at 10k steps, stay under 10 at most evaluations until 190k and "
        "340k, and stay above 90 only from about 1.2M and 0.73M of their 2M steps: about 94 core-hours a million "
        "steps on this CPU (0.34 s a step, results/perf_kernels.md). Here (walker2d-medium-small, seed 0, "
        "results/dac_walker2d_actors.md) the actor is not at fault: with eta fixed at 100 (close to behaviour "
        "cloning) it scores 18.0 acting alone, Diffusion-QL's 19.7; the two parts that need a trained critic are: "
        "eta's adaptation, which walked it to 0.009 and the actor to 8.3, and the critic's greedy pick among 10 "
        "draws, which lowers each actor's score (to 12.4 at eta 100, to 5.0 adapted)")}
    stage_fields = {"policy": tuple(f for f in DACConfig.__dataclass_fields__ if f not in ("device", "candidates"))}
    networks = ("actor", "ema", "critic", "critic_target", "eta")

    @classmethod
    def dataset_overrides(cls, preset: str, dataset: str) -> dict[str, Any]:
        """The reference scripts' per-dataset rho and eta threshold; AntMaze's fixed eta and max-Q backup."""
        if preset == "tiny":
            return {}
        task = locomotion_task(dataset)
        if task is not None:
            return {"rho": RHO.get(task[0], 1.0), "eta_threshold": THRESHOLDS.get(task, 1.0)}
        if family(dataset) == "antmaze":
            large = "large" in dataset.lower()
            return {"max_q_backup": True, "eta": 0.1, "eta_lr": 0.0, "rho": 1.1 if large else 1.0} | (
                {"critic_lr": 1e-3} if large else {})
        return {}

    def build(self, observation_dim: int, action_dim: int) -> None:
        cfg = self.config
        net = DQLNoiseNet(action_dim, observation_dim, cfg.hidden, cfg.layers, cfg.time_dim)
        self.actor = DiscreteDiffusion(net, action_dim, cfg.diffusion_steps, cfg.beta_max).to(self.device)
        self.critic = EnsembleQ(cfg.ensemble, action_dim, observation_dim, cfg.q_hidden, cfg.q_layers).to(self.device)
        self.ema = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.eta = EtaState(cfg.eta).to(self.device)

    def backup(self, next_states: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The lower confidence bound over the ensemble of each member's value of N draws of the EMA policy."""
        cfg = self.config
        rep = next_states.repeat_interleave(cfg.backup_samples, 0)
        q = self.critic_target.members(rep, self.sample(self.ema, rep, generator))
        q = q.view(cfg.ensemble, -1, cfg.backup_samples)
        v = q.amax(-1) if cfg.max_q_backup else q.mean(-1)
        return v.mean(0) - cfg.rho * v.std(0, unbiased=False)

    def train(self, t: Any, workdir: Path | None, hooks: TrainHooks | None, progress: bool) -> dict[str, Any]:
        cfg, n = self.config, t.observations.shape[0]
        actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
        critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        decay = [torch.optim.lr_scheduler.CosineAnnealingLR(o, max(cfg.steps, 1)) for o in (actor_opt, critic_opt)]
        batches = stage_generator(cfg.seed, "policy", self.device)  # the batch, then the actor's noise
        chains = stage_generator(cfg.seed, "chains", self.device)  # the backup's samples
        bc_last: list[torch.Tensor] = []

        def step(i: int) -> torch.Tensor:
            j = torch.randint(n, (cfg.batch,), device=self.device, generator=batches)
            s, a, r, s2, d = t.observations[j], t.actions[j], t.rewards[j], t.next_observations[j], t.terminals[j]
            with torch.no_grad():
                y = r + cfg.gamma * (1 - d) * self.backup(s2, chains)
            critic_loss = optimiser_step(critic_opt, self.critic.regression_loss(s, a, y), cfg.grad_norm)
            polyak_update(self.critic_target, self.critic, cfg.tau)
            loss, bc = guided_noise_loss(self.actor, self.critic_target, s, a, self.eta.value, batches)
            optimiser_step(actor_opt, loss, cfg.grad_norm)
            bc_last[:] = [bc]
            if i >= cfg.ema_start and i % cfg.ema_every == 0:
                polyak_update(self.ema, self.actor, 1 - cfg.ema_decay)
            if cfg.eta_lr > 0:
                self.eta.value.add_(cfg.eta_lr * (bc - cfg.eta_threshold).clamp(-1, 1)).clamp_(cfg.eta_min, cfg.eta_max)
            for schedule in decay:
                schedule.step()
            return critic_loss

        self.actor.train()
        record = run_steps(step, cfg.steps, "policy (dac)", progress=progress, workdir=workdir, hooks=hooks,
                           fingerprint=self.fingerprint("policy"),
                           state={"actor": self.actor, "ema": self.ema, "critic": self.critic,
                                  "critic_target": self.critic_target, "eta": self.eta, "actor_opt": actor_opt,
                                  "critic_opt": critic_opt, "actor_decay": decay[0], "critic_decay": decay[1],
                                  "batches": batches, "chains": chains})
        # where the adaptation left eta, and the noise loss it tracks (the run's diagnostics show both): at the
        # locomotion threshold of 1, a noise loss below 1 walks eta down to eta_min, the critic term's weight up
        record["check"] = {"eta_final": float(self.eta.value), "eta_threshold": cfg.eta_threshold,
                           "bc_loss_final": float(bc_last[0]) if bc_last else None}
        return record

    @torch.inference_mode()
    def choose(self, obs: torch.Tensor) -> torch.Tensor:
        """The greedy pick among `candidates` draws of the policy, for a batch of states on the device."""
        cfg = self.config
        self.actor.eval()
        rep = obs.repeat_interleave(cfg.candidates, 0)
        candidates = self.sample(self.actor, rep, self._act_generator).view(obs.shape[0], cfg.candidates, -1)
        return select(candidates, self.critic_target(obs, candidates), "greedy", 1.0, 1, self._act_generator)
