"""SRPO: score-regularised policy optimisation (Chen et al., ICLR 2024, "Score Regularized Policy Optimization
through Diffusion Behavior"): a deterministic policy that climbs Q while a pretrained diffusion behaviour model's
score holds it inside the data's support; acting is one call of a small MLP.

  1. behaviour  mu_theta(a|s) by denoising score matching: the suite's shared behaviour stage (QGPO's model and
                VP-SDE schedule, `policies.algorithms.pretrain`), trained once for every algorithm that uses it
  2. critic     IQL's (expectile 0.7; AntMaze 0.9): the "iql_critic" stage IDQL trains too, shared with it
  3. policy     a = pi(s), a tanh MLP (the paper's Dirac policy), by the paper's surrogate gradient (eq. 11):
                  min  E_{s, t, z} [ w(t) eps_theta(alpha_t a + sigma_t z, t, s) . a  -  beta grad_a Qbar(s, a) . a ]
                eps_theta and grad_a Q held fixed, so the gradient in the policy's weights is
                  E[ w(t) eps_theta(a_t, t, s) - beta grad_a Qbar(s, a) ] d a / d pi,
                the regulariser's being the diffused KL(pi || mu) one's, -sum_t w(t) grad_a log mu_t(a_t | s) sigma_t;
                t ~ U(0.02, 0.98), w(t) = sigma_t^2 (the paper's "VDS" weighting; also 1 or alpha_t / sigma_t),
                Qbar the mean of the critic's target twins; `regq` divides grad_a Q by its root mean square
                (the official AntMaze setting). The policy's learning rate decays by a cosine to 0 over its steps.
                `noise_baseline` uses eps_theta(a_t) - z for eps_theta(a_t) (the official code's "noise" option of
                its WT setting): z is drawn independently of the policy, so E[z . a] = 0 and the expected gradient is
                the same, with far less variance. Off in the paper preset (the official default); on at the cpu
                budget: on the tiny maze with beta = 0 (the behaviour term alone), 6,000 policy steps scored 10.2
                without it and 28.5 with it (diffusion BC with the same behaviour model: 18.6, MLP BC 19.2).
Its expected gradient in a vanishes where E_{t, z}[w(t) eps(alpha_t a + sigma_t z, t, s)] = beta grad_a Qbar(s, a):
the policy's deterministic optimum, in closed form for a Gaussian behaviour (tests/test_srpo.py).
Per-dataset beta from the official table (`dataset_overrides`); where it has none (PointMaze, OGBench), regq with
beta = 0.05, the locomotion medium datasets' value (not tuned on the scored data).
Where this differs from the official code (thu-ml/SRPO): the behaviour model is the shared stage's network (the
official one is IDQL's LN-ResNet in continuous time) and budget; every preset reuses the shared stages' budgets; the
cpu and tiny presets subtract the noise baseline (above). On the tiny sparse maze the critic misleads at any beta
(regq, 6,000 policy steps: beta 0 28.5, 0.05 5.3, 0.3 and 1 0.0), as DAC's does there (tests/test_dac.py).
The cpu preset's critic is IDQL's 10k-step one, which on walker2d-medium-small reads the data's actions at 69
against their discounted return of 150 (correlation 0.30). Trained 40k steps it reads 140 (correlation 0.89), and
SRPO scored no higher with it: 13.2 ± 7.8 against 18.3 ± 1.2 on seed 0 (std over 10 episodes each: a drop of
about two standard errors on one seed; `critic_steps=40000`, a variant run in the leaderboard store). Its values
are twice the 10k critic's, and at the same beta (regq off) its action gradient pulls harder; that this is the
cause was not measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from envs.dataset import OfflineDataset
from envs.families import family, locomotion_task
from policies import config as cfg_tools
from policies.algorithms.bc import BCPolicy
from policies.algorithms.iql import ICRITIC_FIELDS, ICRITIC_STAGE, build_shared_critic, fit_shared_critic, restore_critic
from policies.algorithms.pretrain import PRETRAIN_FIELDS, BehaviourAlgorithm, PretrainConfig, behaviour_settings
from policies.algorithms.staged import reseeded
from policies.core.diffusion import LR_SCHEDULES, DiffusionModel
from policies.core.fqe import CriticSpec
from policies.core.training import TrainHooks, optimiser_step, run_steps, stage_generator
from policies.errors import ConfigError

WEIGHTINGS = {"vds": lambda alpha, sigma: sigma ** 2, "stable": lambda alpha, sigma: torch.ones_like(sigma),
              "score": lambda alpha, sigma: alpha / sigma}

# the official beta per D4RL dataset (utils.py's temperature_coefficients), by (env, quality)
BETAS = {("hopper", "medium"): 0.05, ("hopper", "medium-replay"): 0.2, ("hopper", "medium-expert"): 0.01,
         ("walker2d", "medium"): 0.05, ("walker2d", "medium-replay"): 0.5, ("walker2d", "medium-expert"): 0.1,
         ("halfcheetah", "medium"): 0.2, ("halfcheetah", "medium-replay"): 0.2, ("halfcheetah", "medium-expert"): 0.01}
ANTMAZE_BETAS = {"umaze-diverse": 0.04, "umaze": 0.02, "medium-play": 0.08, "medium-diverse": 0.05,
                 "large-play": 0.06, "large-diverse": 0.05}


@dataclass(frozen=True)
class SRPOConfig(cfg_tools.Config):
    """Defaults: the official locomotion settings, the behaviour stage at the shared paper preset's."""

    # stage 1: the shared behaviour model (`PRETRAIN_FIELDS["behaviour"]`)
    score_widths: tuple[int, ...] = (512, 256, 128)
    behaviour_steps: int = 600_000
    behaviour_batch: int = 4096
    behaviour_lr: float = 1e-4
    behaviour_lr_schedule: str = "constant"
    # stage 2: IQL's critic (`ICRITIC_FIELDS`, shared with IDQL)
    critic_hidden: int = 256
    critic_layers: int = 2
    critic_steps: int = 1_500_000
    critic_batch: int = 256
    critic_lr: float = 3e-4
    gamma: float = 0.99
    target_tau: float = 0.005
    expectile: float = 0.7
    normalize_states: bool = False  # the official code feeds raw states
    # stage 3: the policy
    policy_hidden: int = 256
    policy_layers: int = 2  # AntMaze: 4
    policy_steps: int = 1_000_000
    policy_batch: int = 256
    policy_lr: float = 3e-4  # decays by a cosine to 0 over policy_steps
    beta: float = 0.05  # hopper- and walker2d-medium's; per dataset: `dataset_overrides`
    weighting: str = "vds"
    regq: bool = False
    noise_baseline: bool = False  # the official default; see the module docstring
    t_min: float = 0.02
    t_max: float = 0.98
    seed: int = 0
    device: str = "auto"

    LATER = PretrainConfig.LATER

    def __post_init__(self) -> None:
        cfg_tools.check_bounds(self, "srpo", at_least_one=("behaviour_batch", "critic_hidden", "critic_layers",
                                                           "critic_batch", "policy_hidden", "policy_layers", "policy_batch"),
                               non_negative=("behaviour_steps", "critic_steps", "policy_steps"),
                               positive=("behaviour_lr", "critic_lr", "policy_lr"), finite_non_negative=("beta",),
                               unit_interval=("gamma", "target_tau"))
        if not self.score_widths or min(self.score_widths) < 1:
            raise ConfigError(f"srpo: score_widths must be positive widths, got {self.score_widths}")
        if self.behaviour_lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"srpo: unknown behaviour_lr_schedule {self.behaviour_lr_schedule!r}; choose one of "
                              f"{', '.join(LR_SCHEDULES)}")
        if not 0 < self.expectile < 1:
            raise ConfigError(f"srpo: expectile must be in (0, 1), got {self.expectile}")
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(f"srpo: unknown weighting {self.weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
        if not 0 < self.t_min < self.t_max <= 1:
            raise ConfigError(f"srpo: need 0 < t_min < t_max <= 1, got t_min {self.t_min}, t_max {self.t_max}")


def _preset(name: str, **rest: Any) -> SRPOConfig:
    return SRPOConfig(**behaviour_settings(name), **rest)


PRESETS = {"paper": _preset("paper"),
           # the critic at IDQL's cpu budget, so that the two share it
           "cpu": _preset("cpu", critic_steps=10_000, policy_steps=20_000, noise_baseline=True),
           "tiny": _preset("tiny", critic_hidden=32, critic_steps=50, critic_batch=64, policy_hidden=32,
                           policy_steps=40, policy_batch=64, noise_baseline=True)}


def srpo_loss(actions: torch.Tensor, states: torch.Tensor, behaviour: DiffusionModel, q_grad: torch.Tensor,
              beta: float, weighting: str, t_range: tuple[float, float], generator: torch.Generator,
              noise_baseline: bool = False) -> torch.Tensor:
    """The surrogate whose gradient in the policy's weights is SRPO's: w(t) eps(a_t) . a - beta grad Q . a, the
    noise prediction at a diffused copy of the policy's action held fixed, as is `q_grad` (grad_a Qbar);
    `noise_baseline` subtracts the injected noise from it, which leaves the expected gradient as it is."""
    t = torch.rand((actions.shape[0],), device=actions.device, generator=generator) * (t_range[1] - t_range[0]) + t_range[0]
    z = torch.randn(actions.shape, device=actions.device, generator=generator)
    alpha, sigma = behaviour.schedule.alpha_sigma(t)
    with torch.no_grad():
        eps = behaviour.net(alpha[:, None] * actions.detach() + sigma[:, None] * z, t, states)
        if noise_baseline:
            eps = eps - z
    weight = WEIGHTINGS[weighting](alpha, sigma)
    return (weight * (eps * actions).sum(-1) - beta * (q_grad * actions).sum(-1)).mean()


class SRPO(BehaviourAlgorithm):
    name = "srpo"
    description = ("SRPO (Chen et al., ICLR 2024): a deterministic policy maximising Q, regularised toward the data by "
                   "a diffusion behaviour model's score; one network call per action")
    budget_fields = ("behaviour_steps", "critic_steps", "policy_steps")
    config_cls = SRPOConfig
    presets = PRESETS
    curve_stages = ("policy",)
    critic_stages = (ICRITIC_STAGE,)
    stages = ("behaviour", ICRITIC_STAGE, "policy")
    shared_stages = ("behaviour", ICRITIC_STAGE)
    independent_stages = (ICRITIC_STAGE,)  # the critic never reads mu_theta: IDQL's, trained first there
    stage_fields = {"behaviour": PRETRAIN_FIELDS["behaviour"], ICRITIC_STAGE: ICRITIC_FIELDS,
                    "policy": ("policy_hidden", "policy_layers", "policy_steps", "policy_batch", "policy_lr", "beta",
                               "weighting", "regq", "noise_baseline", "t_min", "t_max")}
    policy_stages = (ICRITIC_STAGE, "policy")

    @classmethod
    def dataset_overrides(cls, preset: str, dataset: str) -> dict[str, Any]:
        """The official beta per D4RL dataset, with its AntMaze settings (regq, a 4-layer policy, expectile 0.9);
        elsewhere regq with the default beta."""
        if preset == "tiny":
            return {}
        task = locomotion_task(dataset)
        if task is not None:
            return {"beta": BETAS[task]} if task in BETAS else {}
        if family(dataset) == "antmaze":
            name = dataset.lower()
            beta = next((v for k, v in ANTMAZE_BETAS.items() if k in name), 0.05)
            return {"beta": beta, "regq": True, "policy_layers": 4, "expectile": 0.9}
        return {"regq": True}

    def build(self, observation_dim: int, action_dim: int) -> None:
        cfg = self.config
        self.build_behaviour(observation_dim, action_dim)  # first: mu_theta starts as QGPO's does
        with reseeded(cfg.seed):  # as IDQL builds it, first
            self.critic = build_shared_critic(self, observation_dim, action_dim)
        self.policy = BCPolicy(observation_dim, action_dim, cfg.policy_hidden, cfg.policy_layers, self.action_low,
                               self.action_high).to(self.device)

    def fit(self, dataset: OfflineDataset, workdir: Path | None = None, progress: bool = False,
            hooks: TrainHooks | None = None) -> dict[str, Any]:
        self.check_dataset(dataset)
        t = dataset.transitions.to(self.device)
        self.resume(workdir)
        self.fit_behaviour_stage(t, workdir, hooks, progress)
        fit_shared_critic(self, self.critic, t, workdir, hooks, progress)
        with self.stage("policy", workdir, hooks) as todo:
            if todo:
                self.records["policy"] = self.train_policy(t, workdir, hooks, progress)
                self.save(workdir, "policy", {"policy": self.policy.state_dict()})
        return {"stages": self.records, "resumed": sorted(self.restored), "cost": self.cost}

    def q_grad(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """grad_a of the target twins' mean at the policy's actions (root-mean-square normalised with `regq`)."""
        a = actions.detach().requires_grad_(True)
        with torch.enable_grad():
            q1, q2 = self.critic.q_target.both(self.critic.norm(states), a)
            grad, = torch.autograd.grad(((q1 + q2) / 2).sum(), a)
        if self.config.regq:
            grad = grad / grad.pow(2).mean(-1, keepdim=True).sqrt().clamp(min=1e-12)
        return grad

    def train_policy(self, t: Any, workdir: Path | None, hooks: TrainHooks | None, progress: bool) -> dict[str, Any]:
        cfg, n = self.config, t.observations.shape[0]
        opt = torch.optim.Adam(self.policy.parameters(), lr=cfg.policy_lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(cfg.policy_steps, 1))
        gen = stage_generator(cfg.seed, "policy", self.device)
        self.behaviour.eval()

        def step(_: int) -> torch.Tensor:
            s = t.observations[torch.randint(n, (cfg.policy_batch,), device=self.device, generator=gen)]
            a = self.policy(s)
            loss = optimiser_step(opt, srpo_loss(a, s, self.behaviour, self.q_grad(s, a), cfg.beta, cfg.weighting,
                                                 (cfg.t_min, cfg.t_max), gen, cfg.noise_baseline))
            schedule.step()
            return loss

        return run_steps(step, cfg.policy_steps, "policy (srpo)", progress=progress, workdir=workdir, hooks=hooks,
                         fingerprint=self.fingerprint("policy"),
                         state={"policy": self.policy, "optimizer": opt, "schedule": schedule, "generator": gen})

    def critic_spec(self) -> CriticSpec:
        cfg = self.config
        return CriticSpec(self.critic.q, cfg.normalize_states, cfg.critic_lr, cfg.critic_batch, cfg.target_tau, cfg.gamma)

    def q_function(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return self.critic.q_value

    @torch.inference_mode()
    def act(self, observations: np.ndarray) -> np.ndarray:
        return self.clip(self.policy(self.observations(observations)))

    @property
    def cost(self) -> dict[str, Any]:
        return self.counted_cost(nfe_per_action=1)

    def restore(self, stage: str, ckpt: dict[str, Any]) -> None:
        if stage == "behaviour":
            self.behaviour.load_state_dict(ckpt["behaviour"])
        elif stage == ICRITIC_STAGE:
            restore_critic(self.critic, ckpt)
        else:
            self.policy.load_state_dict(ckpt["policy"])
