"""The shared core of fine-tuning a pretrained diffusion policy toward a reward (DDPO, CTRL, DxMI).

The denoising chain as an MDP (Black et al. 2023, Sec. 4.2): K stochastic steps x_T = x_0' -> ... ->
x_K' = a, each a Gaussian p(x_{k+1} | x_k, s) = N(a_k x_k + b_k eps(x_k, t_k, s), std_k^2) whose
log-density is SUMMED over action dimensions (DDPO's official code averages over dimensions, which
shrinks importance ratios and KLs by the dimension; the sum is the chain's true log-density).

The objective every method here optimises, or starts from, is KL-regularised:
    J(theta) = E_{s, chain_theta}[ Q(s, a) ] - (1/beta) KL(P_theta(chain | s) || P_pre(chain | s)),
with the path KL summed per step in closed form (same std on both sides):
    KL_k = || mean_theta(x_k) - mean_pre(x_k) ||^2 / (2 std_k^2).
Its optimum over path measures is P* ∝ P_pre exp(beta Q(s, a)), whose action marginal is
pi*(a|s) ∝ p_pre(a|s) exp(beta Q(s, a)): the target of CEP guidance at scale 1, so the two can be
checked against the same exact samples.

Why the chain must be memoryless (DDIM eta = 1 or the reverse SDE, from t = 1): the fine-tuned chain
starts from the same x_T ~ N(0, I) as the pretrained one, but P* also tilts x_T's law, by
h(x_T) = E_pre[exp(beta Q) | x_T]. A fixed x_T is harmless only when h is constant, i.e. when a is
nearly independent of x_T; otherwise the optimum is biased away from the tilted target (the
"initial value bias" of reward fine-tuning: Uehara et al. 2024; Domingo-Enrich et al. 2024,
adjoint matching). With eta = 1 from t = 1 (alpha_1 ~ 0.007) the dependence is negligible; a
deterministic (eta = 0) chain would not even have a log-density to take a policy gradient of.
"""

from __future__ import annotations

import copy
import math
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
from torch import nn

from envs.dataset import OfflineDataset
from policies.errors import ConfigError
from policies.algorithms.pretrain import PRETRAIN_FIELDS, PRETRAIN_STAGES, PretrainConfig, PretrainedAlgorithm
from policies.core.samplers import ddim_transition, sde_transition
from policies.core.schedule import T_MIN, VPSchedule, time_grid
from policies.core.training import TrainHooks, stage_generator

CHAINS = ("ddim", "sde")
GRIDS = ("uniform", "quadratic")
RewardFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (states (N, S), actions (N, A)) -> (N,)


class NoiseModel(Protocol):
    """What the chain needs of a diffusion model (`DiffusionModel` is one): eps(x, t, s) and its schedule."""

    schedule: VPSchedule
    action_dim: int
    net: nn.Module  # net(x (N, A), t (N,), states (N, S)) -> eps (N, A)


@dataclass(frozen=True)
class Chain:
    """K Gaussian steps from t = 1 to t_end, each mean = a_k x + b_k eps(x, t_k); every step, the last
    included, adds noise, so each has a log-density."""

    kind: str = "sde"
    steps: int = 10
    grid: str = "quadratic"  # times uniform in t, or in sqrt(t) ("quadratic", DPM-Solver's time_quadratic)
    t_end: float = T_MIN

    def __post_init__(self) -> None:
        if self.kind not in CHAINS:
            raise ConfigError(f"unknown chain {self.kind!r}; choose one of {', '.join(CHAINS)} (both memoryless)")
        if self.steps < 1:
            raise ConfigError(f"the chain needs at least one step (K >= 1), got {self.steps}")
        if self.grid not in GRIDS:
            raise ConfigError(f"unknown time grid {self.grid!r}; choose one of {', '.join(GRIDS)}")

    def times(self) -> list[float]:
        if self.grid == "uniform":
            return time_grid(self.steps, 1.0, self.t_end)
        root = math.sqrt(self.t_end)
        return [(1.0 + (root - 1.0) * i / self.steps) ** 2 for i in range(self.steps + 1)]

    def coefficients(self, schedule: VPSchedule) -> tuple[list[float], torch.Tensor]:
        """Times t_0..t_K and a (K, 3) table of (a_k, b_k, std_k), read off the samplers' own transitions
        (probed with x = 1, eps = 0 and x = 0, eps = 1), so the chain is the sampler's, step for step."""
        ts = self.times()
        one, zero = torch.ones(1, 1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64)
        rows = []
        for t, s in zip(ts[:-1], ts[1:]):
            step = ((lambda e, x: ddim_transition(e, x, t, s, schedule, 1.0)) if self.kind == "ddim"
                    else (lambda e, x: sde_transition(e, x, t, s, schedule)))
            a, std = step(zero, one)
            b, _ = step(one, zero)
            rows.append((a.item(), b.item(), std))
        return ts, torch.tensor(rows, dtype=torch.float64)


@dataclass
class Trajectory:
    """Chains sampled for a batch of states, n per state (rows grouped by state), with what the update needs."""

    states: torch.Tensor  # (N, S), each state repeated `group` times in a row
    xs: torch.Tensor  # (K + 1, N, A): x_T, ..., x_0 = the actions
    log_probs: torch.Tensor  # (K, N) under the sampling policy (zeros at frozen steps)
    pre_means: torch.Tensor  # (K, N, A): the pretrained chain's means at the visited x_k
    kl: torch.Tensor  # (K, N): per-step KL(fine-tuned || pretrained) at sampling time
    group: int

    @property
    def actions(self) -> torch.Tensor:
        return self.xs[-1]


def gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, std^2 I) summed over the last (action) dimension; std broadcasts per row."""
    d = x.shape[-1]
    return -0.5 * ((x - mean) / std[..., None]).pow(2).sum(-1) - d * (std.log() + 0.5 * math.log(2 * math.pi))


def step_kl(mean: torch.Tensor, pre_mean: torch.Tensor, std: torch.Tensor, pre_std: torch.Tensor | None = None
            ) -> torch.Tensor:
    """KL(N(mean, std^2 I) || N(pre_mean, pre_std^2 I)) summed over action dimensions (pre_std = std if None)."""
    if pre_std is None:
        return (mean - pre_mean).pow(2).sum(-1) / (2 * std.pow(2))
    d, ratio = mean.shape[-1], (std / pre_std).pow(2)
    return (mean - pre_mean).pow(2).sum(-1) / (2 * pre_std.pow(2)) + 0.5 * d * (ratio - 1 - ratio.log())


class FinetunedPolicy(nn.Module):
    """A trainable copy of the pretrained model on the chain, the pretrained one kept frozen beside it.

    Steps before `first_trained` (all steps but the last `train_last`, as DPPO fine-tunes) use the
    pretrained model, so they carry no KL and no gradient. Untrained, it is exactly the pretrained chain.
    """

    def __init__(self, pretrained: NoiseModel, chain: Chain, train_last: int = 0, model: NoiseModel | None = None):
        """`model`: the trainable model when it is not a plain copy of `pretrained` (CTRL's, with new
        controls); it must start equal to `pretrained` for the fine-tuning to start from it."""
        super().__init__()
        if not 0 <= train_last <= chain.steps:
            raise ConfigError(f"train_last must be in [0, {chain.steps}] (0: every step), got {train_last}")
        self.chain = chain
        self.pretrained = pretrained
        self.model = (model if model is not None else copy.deepcopy(pretrained)).requires_grad_(True)
        self.pretrained.requires_grad_(False)
        self.first_trained = chain.steps - train_last if train_last else 0
        ts, table = chain.coefficients(pretrained.schedule)
        self.times = ts
        self.register_buffer("coef", table.float(), persistent=False)

    def stds(self) -> torch.Tensor:
        """(K,): each step's noise std, the chain's own (DxMI's sampler learns them)."""
        return self.coef[:, 2]

    @property
    def trained_steps(self) -> range:
        return range(self.first_trained, self.chain.steps)

    def means(self, model: NoiseModel, x: torch.Tensor, k: int, states: torch.Tensor) -> torch.Tensor:
        """Means of step k from x_k (one shared time: the network embeds it once, not per row)."""
        a, b, _ = self.coef[k]
        return a * x + b * model.net(x, self.times[k], states)

    @torch.no_grad()
    def rollout(self, states: torch.Tensor, group: int, generator: torch.Generator | None = None) -> Trajectory:
        """`group` chains per state, recording what the policy-gradient and KL terms need."""
        rep = states.repeat_interleave(group, 0)
        n, dim, steps = rep.shape[0], self.pretrained.action_dim, self.chain.steps
        x = torch.randn((n, dim), device=rep.device, generator=generator)
        xs = [x]
        log_probs = torch.zeros(steps, n, device=rep.device)
        pre_means = torch.empty(steps, n, dim, device=rep.device)
        kl = torch.zeros(steps, n, device=rep.device)
        stds = self.stds()
        for k in range(steps):
            pre_means[k] = self.means(self.pretrained, x, k, rep)
            mean = self.means(self.model, x, k, rep) if k >= self.first_trained else pre_means[k]
            x = mean + stds[k] * torch.randn(mean.shape, device=mean.device, generator=generator)
            if k >= self.first_trained:
                log_probs[k] = gaussian_log_density(x, mean, stds[k].expand(n))
                kl[k] = step_kl(mean, pre_means[k], stds[k])
            xs.append(x)
        return Trajectory(rep, torch.stack(xs), log_probs, pre_means, kl, group)

    def rescore(self, traj: Trajectory, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-densities and KLs of the trained steps of chains `rows` under the current parameters,
        with gradients: each (len(trained_steps), len(rows))."""
        states = traj.states[rows]
        log_probs, kls = [], []
        for k in self.trained_steps:
            mean = self.means(self.model, traj.xs[k, rows], k, states)
            std = self.stds()[k]
            log_probs.append(gaussian_log_density(traj.xs[k + 1, rows], mean, std.expand(rows.numel())))
            kls.append(step_kl(mean, traj.pre_means[k, rows], std))
        return torch.stack(log_probs), torch.stack(kls)

    def pathwise(self, states: torch.Tensor, generator: torch.Generator | None = None, truncate: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """One chain per state with reparameterised noise, x_{k+1} = mean_theta(x_k) + std_k z_k, kept
        differentiable: returns the actions and the per-step KLs (len(trained_steps), N), both carrying
        gradients, for reward backpropagation (CTRL; DRaFT). The KL's gradient flows through x_k too,
        which is what makes E_theta[sum_k KL_k] the path KL's pathwise estimate.

        `truncate` = K' > 0: the reward's gradient flows back through the last K' steps only (truncated
        backpropagation); every trained step's KL keeps its direct gradient."""
        if not 0 <= truncate <= self.chain.steps:
            raise ConfigError(f"truncate must be in [0, {self.chain.steps}] (0: through every step), got {truncate}")
        n, stds = states.shape[0], self.stds()
        cut = self.chain.steps - truncate if truncate else 0
        x = torch.randn((n, self.pretrained.action_dim), device=states.device, generator=generator)
        kls = []
        for k in range(self.chain.steps):
            if k <= cut:
                x = x.detach()
            if k < self.first_trained:
                with torch.no_grad():
                    mean = self.means(self.pretrained, x, k, states)
            else:
                mean = self.means(self.model, x, k, states)
                kls.append(step_kl(mean, self.means(self.pretrained, x, k, states), stds[k]))
            x = mean + stds[k] * torch.randn(mean.shape, device=mean.device, generator=generator)
        return x, torch.stack(kls)

    def trained_state(self) -> dict[str, Any]:
        """What a checkpoint of the fine-tuned policy holds (the pretrained model is its own stage's)."""
        return {"model": self.model.state_dict()}

    def load_trained_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])

    @torch.inference_mode()
    def sample(self, states: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One action per state from the fine-tuned chain: K network evaluations, nothing recorded."""
        x = torch.randn((states.shape[0], self.pretrained.action_dim), device=states.device, generator=generator)
        stds = self.stds()
        for k in range(self.chain.steps):
            mean = self.means(self.model if k >= self.first_trained else self.pretrained, x, k, states)
            x = mean + stds[k] * torch.randn(mean.shape, device=mean.device, generator=generator)
        return x


def returns_to_go(traj: Trajectory, rewards: torch.Tensor, beta: float) -> torch.Tensor:
    """(K, N): G_k = beta * r - sum_{j > k} KL_j, what the choice made at step k (x_{k+1}) goes on to
    earn in the objective beta * J (the KL of step k itself depends on x_k only, not on that choice)."""
    later = traj.kl.flip(0).cumsum(0).flip(0) - traj.kl  # sum over j > k
    return beta * rewards[None] - later


def group_advantages(returns: torch.Tensor, group: int) -> tuple[torch.Tensor, float]:
    """Advantages against the mean of the OTHER chains of the same state (leave-one-out), divided by one
    batch-wide scale (their std at the first step); returns (advantages, scale).

    Leave-one-out, because a group mean that includes the chain itself shrinks the reward's gradient by
    (1 - 1/G) and not the KL's: the policy would settle at the tilt of beta (1 - 1/G) (half the shift at
    G = 2). The KL gradient must be divided by the same scale: the normalisation then rescales the whole
    objective, and its optimum stays the tilt."""
    if group < 2:
        raise ConfigError(f"advantages compare the chains of one state: the group must hold >= 2, got {group}")
    k, n = returns.shape
    g = returns.reshape(k, n // group, group)
    adv = ((g - g.mean(-1, keepdim=True)) * (group / (group - 1))).reshape(k, n)  # G_i - mean_{j != i} G_j
    scale = float(adv[0].std()) if n > 1 else 0.0
    scale = scale if scale > 1e-8 else 1.0
    return adv / scale, scale


def check_rewards(rewards: torch.Tensor, what: str) -> None:
    """A reward model that returns NaN or inf stops fine-tuning before it starts, naming what went wrong."""
    bad = ~torch.isfinite(rewards)
    if bad.any():
        raise ConfigError(f"the reward model returned {int(bad.sum())} non-finite value(s) of {rewards.numel()} "
                          f"on {what}; check the critic (retrain the critic stage) or the reward function")


@dataclass(frozen=True)
class FinetuneConfig(PretrainConfig):
    """The shared stages' settings plus the chain and the KL-regularised objective every method shares."""

    # the chain: "sde" (Euler-Maruyama of the reverse SDE) or "ddim" (eta = 1), both memoryless; times uniform
    # in sqrt(t) ("quadratic") or in t. At K = 10 the SDE on the quadratic grid samples mu_theta far better than
    # DDIM eta = 1 (whose few-step variance collapses): results/finetune.md, first table
    chain: str = "sde"
    chain_grid: str = "quadratic"
    chain_steps: int = 10  # K
    train_last: int = 0  # fine-tune only the last K' steps (DPPO); 0: all K
    beta: float = 3.0  # optimum p_pre(a|s) exp(beta Q(s, a)); KL weight 1/beta; 0 leaves the model as pretrained

    def check_finetune(self, algorithm: str) -> None:
        self.check_pretrain(algorithm)
        if self.interleave:
            raise ConfigError(f"{algorithm}: interleave is QGPO's schedule (it trains f_phi beside Q_0); "
                              f"{algorithm} trains no f_phi: set interleave=false")
        if self.chain not in CHAINS:
            raise ConfigError(f"{algorithm}: unknown chain {self.chain!r}; choose one of {', '.join(CHAINS)}")
        if self.chain_grid not in GRIDS:
            raise ConfigError(f"{algorithm}: unknown chain_grid {self.chain_grid!r}; choose one of {', '.join(GRIDS)}")
        if isinstance(self.chain_steps, bool) or self.chain_steps < 1:
            raise ConfigError(f"{algorithm}: chain_steps (K) must be >= 1, got {self.chain_steps}")
        if not 0 <= self.train_last <= self.chain_steps:
            raise ConfigError(f"{algorithm}: train_last must be in [0, chain_steps={self.chain_steps}] "
                              f"(0: every step), got {self.train_last}")
        if not math.isfinite(self.beta) or self.beta < 0:
            raise ConfigError(f"{algorithm}: beta must be >= 0 (0 keeps the pretrained policy), got {self.beta}")

    def chain_spec(self) -> Chain:
        return Chain(self.chain, self.chain_steps, self.chain_grid)


FINETUNE_FIELDS = ("chain", "chain_grid", "chain_steps", "train_last", "beta")


def finetune_stage_fields(method_fields: tuple[str, ...],
                          before: dict[str, tuple[str, ...]] = PRETRAIN_FIELDS) -> dict[str, tuple[str, ...]]:
    """Stage fingerprints of a fine-tuning algorithm: the reward model's stages' (by default the shared
    behaviour, support and critic), then the chain's and the method's."""
    return {**before, "finetune": (*FINETUNE_FIELDS, *method_fields)}


class FinetuneAlgorithm(PretrainedAlgorithm):
    """The reward model's stages, then `finetune`: a copy of mu_theta trained on the chain toward the
    reward by the method's `finetune`. Acts by running the fine-tuned chain.

    By default the reward is Q_0, so the stages are behaviour, support and critic, shared with QGPO
    (DDPO, DxMI). A method with another reward (CTRL: a classifier) overrides `stages`,
    `fit_reward_model`, `reward`, `new_policy` and `policy_states`."""

    stages = (*PRETRAIN_STAGES, "finetune")
    policy_stages = ("behaviour", "finetune")
    curve_stages = ("finetune",)

    def build(self, observation_dim: int, action_dim: int) -> None:
        self.build_pretrained(observation_dim, action_dim)
        self.policy: FinetunedPolicy | None = None

    @abstractmethod
    def finetune(self, policy: FinetunedPolicy, states: torch.Tensor, reward: RewardFn, generator: torch.Generator,
                 workdir: Path | None, hooks: TrainHooks | None, progress: bool) -> dict[str, Any]:
        """Train `policy.model` toward `reward` from dataset `states`; returns the stage's record."""

    def fit_reward_model(self, dataset: OfflineDataset, t: Any, workdir: Path | None, hooks: TrainHooks | None,
                         progress: bool) -> None:
        """Every stage before `finetune` (here: behaviour, support, critic); `t`: the transitions on the device."""
        self.fit_pretrained(t, workdir, hooks, progress)
        if not self.keeps_support():
            self._support = {}  # only the critic needed them

    def keeps_support(self) -> bool:
        """Whether the fine-tuning stage reads the support actions too (DxMI's imitation tilt)."""
        return False

    def reward(self) -> RewardFn:
        """Q_0 (the critic's target net, min of the twins) of the action clipped to the bounds, as acted."""
        q, low, high = self.q_target, self.action_low, self.action_high
        return lambda s, a: q(s, torch.clamp(a, low, high))

    def new_policy(self) -> FinetunedPolicy:
        """The policy to fine-tune, equal to the pretrained chain until trained."""
        return FinetunedPolicy(self.behaviour, self.config.chain_spec(), self.config.train_last)

    def policy_states(self, observations: torch.Tensor) -> torch.Tensor:
        """What the chain is conditioned on when acting (CTRL appends the control's label)."""
        return observations

    def fit(self, dataset: OfflineDataset, workdir: Path | None = None, progress: bool = False,
            hooks: TrainHooks | None = None) -> dict[str, Any]:
        self.check_dataset(dataset)
        cfg = self.config
        t = dataset.transitions.to(self.device)
        workdir = Path(workdir) if workdir is not None else None
        self.resume(workdir)
        self.fit_reward_model(dataset, t, workdir, hooks, progress)
        with self.stage("finetune", workdir, hooks) as todo:
            if todo:
                self.policy = self.new_policy()
                reward = self.reward()
                with torch.no_grad():  # a reward model that returns NaN stops here, not mid-training
                    probe = self.policy_states(t.observations[:4096])
                    check_rewards(reward(probe, t.actions[:4096]), "dataset actions")
                    drawn = self.policy.sample(probe, stage_generator(cfg.seed, "reward check", self.device))
                    check_rewards(reward(probe, drawn), "actions of the pretrained chain")
                if cfg.beta == 0:  # the optimum is the pretrained chain itself: nothing to train
                    self.records["finetune"] = {"stage": "finetune", "steps": 0, "gradient_steps": 0,
                                                "samples": 0, "seconds": 0.0, "skipped": "beta = 0"}
                else:
                    self.records["finetune"] = self.finetune(
                        self.policy, t.observations, reward, stage_generator(cfg.seed, "finetune", self.device),
                        workdir, hooks, progress)
                self.save(workdir, "finetune", self.policy.trained_state())
        return {"stages": self.records, "resumed": sorted(self.restored), "cost": self.cost}

    def acting_policy(self) -> FinetunedPolicy | None:
        """The chain `act` runs: the fine-tuned one, once there is one."""
        return self.policy

    def start(self) -> "FinetuneAlgorithm | None":
        """A shallow copy acting with `new_policy()`, the chain fine-tuning starts from (the pretrained chain; DxMI:
        its imitation sampler); None before there is a fine-tuned chain to set it beside."""
        if self.policy is None:
            return None
        twin = copy.copy(self)
        twin.policy = self.new_policy()
        return twin

    @torch.inference_mode()
    def act(self, observations: np.ndarray) -> np.ndarray:
        policy = self.acting_policy()
        if policy is None:
            raise ConfigError(f"{self.name} has no fine-tuned policy yet; fit it or load a trained run")
        states = self.policy_states(self.observations(observations))
        return self.clip(policy.sample(states, self._act_generator))

    def stage_steps(self) -> dict[str, int]:
        """Gradient steps of each stage before `finetune` (the config's budget)."""
        return {"behaviour": self.config.behaviour_steps, "critic": self.config.q_steps}

    @property
    def cost(self) -> dict[str, Any]:
        cfg = self.config
        finetune = self.records.get("finetune", {})
        budget = {**self.stage_steps(), "finetune": finetune.get("gradient_steps", 0)}
        steps = {s: n for s, n in budget.items() if s in self.records}
        extra = {"support_nfe_per_action": cfg.support_sampler.steps} if "support" in self.stages else {}
        return {"gradient_steps": steps, "gradient_steps_total": sum(steps.values()),
                "nfe_per_action": cfg.chain_steps, **extra,
                "finetune_samples": finetune.get("samples", 0), "finetune_nfe": finetune.get("nfe", 0)}

    def restore(self, stage: str, ckpt: dict[str, Any]) -> None:
        if not self.restore_pretrained(stage, ckpt):
            self.policy = self.new_policy()
            self.policy.load_trained_state(ckpt)
