"""DDPO with a KL to the pretrained chain (Black et al., ICLR 2024; the KL as in DPOK, Fan et al. 2023, and
Uehara et al. 2024), on a pretrained mu_theta: KL-regularised DDPO with a per-state group baseline, not the
published unregularised method, whose optimum is not a tilt of mu_theta but a collapse onto the reward's mode.

The denoising chain is an MDP whose final step earns the reward (here Q_0(s, a)); the policy gradient
runs through every step's Gaussian log-density (`policies.algorithms.finetune`). Per iteration (Algorithm 1):
  1. draw `states_per_iteration` dataset states and a group of `samples_per_state` fresh chains for each
  2. r = Q_0(s, a_0); returns-to-go G_k = beta r - sum_{j>k} KL_j (the per-step KL as a cost)
  3. advantages: G_k minus the mean of the OTHER chains of the same state (leave-one-out), divided by one
     batch-wide std, clipped to +-adv_clip
  4. `inner_epochs` passes over the chains in `minibatches`, one gradient step each:
       ppo   (DDPO_IS): -min(rho A, clip(rho, 1 +- eps) A),  rho = p_theta(x_{k+1}|x_k) / p_old(x_{k+1}|x_k)
       score (DDPO_SF): -rho A, rho unclipped: the score-function gradient -grad log p A on the first
             minibatch, importance-weighted on the later ones, drawn before the policy moved
     plus the closed-form KL of each trained step, divided by the same std as the advantages.
Its optimum is the tilt p_pre exp(beta Q) at any group size (tested at G = 2 and 4, and the estimator's mean
gradient against the objective's in closed form, tests/test_finetune.py).

Where this departs from the official code (kvablack/ddpo-pytorch at HEAD, config/base.py), and why:
- The KL-to-pretrained term is added; its gradient is divided by the advantages' std too, so the
  normalisation rescales the whole objective and leaves the tilt in place.
- The baseline: per state, the other chains of a group drawn together (leave-one-out, so the reward's
  gradient is not shrunk by 1 - 1/G against the KL's). The official code keeps a rolling buffer of the
  last 16 rewards per prompt (`per_prompt_stat_tracking`, min_count 16) and divides by that buffer's std;
  here one batch-wide std divides the advantages and the KL alike.
- Log-densities are summed over action dimensions; the official code averages them over the 16,384 latent
  dimensions, so its clip range 1e-4 on averaged log-ratios is about 1.6 on summed ones; PPO's own 0.2 on
  these true ratios is about 8x tighter than the official setting.
- The loss sums the trained steps' terms (the gradient of the path objective) before the gradient-norm clip;
  the official code averages over steps (its gradient accumulation), which only the clip can tell apart.
- A full copy of the small action network with Adam, no weight decay (official: LoRA, AdamW 1e-4, which
  would pull the weights toward zero, not toward mu_theta); lr 3e-4 and adv_clip 5 are the official values.
- K = 10 steps of the reverse SDE on a quadratic time grid by default (the official: 50 DDIM steps, eta = 1);
  `chain=ddim chain_grid=uniform` is its chain. At 10 steps DDIM eta = 1 is a poor sampler of mu_theta
  (results/finetune.md, first table), and the optimum is the tilt of the chain's own law.
- The reward is Q_0 of a state-conditioned policy, not a prompt-free image score: states are drawn from
  the dataset each iteration; the per-prompt statistics become per-state groups of chains.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from policies.errors import ConfigError
from policies.algorithms.finetune import (FinetuneAlgorithm, FinetuneConfig, FinetunedPolicy, RewardFn, Trajectory,
                                          finetune_stage_fields, group_advantages, returns_to_go)
from policies.algorithms.pretrain import PRETRAIN_PRESETS, pretrain_settings
from policies import config as cfg_tools
from policies.core.training import TrainHooks, run_steps

ESTIMATORS = ("ppo", "score")


@dataclass(frozen=True)
class DDPOConfig(FinetuneConfig):
    estimator: str = "ppo"  # "ppo" (DDPO_IS) or "score" (DDPO_SF)
    iterations: int = 5_000
    states_per_iteration: int = 256
    samples_per_state: int = 16  # G, chains drawn together per state (the official: a 16-reward buffer per prompt)
    inner_epochs: int = 1  # the official value
    minibatches: int = 4  # gradient steps per epoch
    lr: float = 3e-4  # the official value
    clip_range: float = 0.2  # on summed log-ratios (the official 1e-4 is on ratios averaged over 16,384 dims)
    adv_clip: float = 5.0  # the official `adv_clip_max`
    max_grad_norm: float = 1.0  # the official value

    def __post_init__(self) -> None:
        self.check_finetune("ddpo")
        cfg_tools.check_bounds(self, "ddpo", at_least_one=("states_per_iteration", "inner_epochs", "minibatches"),
                               non_negative=("iterations",), positive=("lr", "clip_range", "adv_clip", "max_grad_norm"))
        if self.samples_per_state < 2:
            raise ConfigError(f"ddpo: samples_per_state must be >= 2 (advantages compare the chains of one state), "
                              f"got {self.samples_per_state}")
        if self.estimator not in ESTIMATORS:
            raise ConfigError(f"ddpo: unknown estimator {self.estimator!r}; choose one of {', '.join(ESTIMATORS)}")
        if self.minibatches > self.states_per_iteration * self.samples_per_state:
            raise ConfigError(f"ddpo: minibatches ({self.minibatches}) exceeds the chains per iteration "
                              f"({self.states_per_iteration * self.samples_per_state})")


def ddpo_loss(log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor, kl: torch.Tensor,
              scale: float, estimator: str, clip_range: float) -> torch.Tensor:
    """The per-chain loss (mean over chains of the sum over trained steps) of one minibatch, all (K', B)."""
    ratio = torch.exp(log_probs - old_log_probs)
    if estimator == "ppo":
        pg = -torch.minimum(ratio * advantages, ratio.clamp(1 - clip_range, 1 + clip_range) * advantages)
    else:  # importance-weighted score function: later minibatches of a batch were drawn by an older policy
        pg = -ratio * advantages
    return (pg + kl / scale).sum(0).mean()


def ddpo_advantages(traj: Trajectory, rewards: torch.Tensor, cfg: DDPOConfig, trained: list[int]
                    ) -> tuple[torch.Tensor, float]:
    """Steps 2-3: (advantages (K', N), the scale that divided them and must divide the KL)."""
    adv, scale = group_advantages(returns_to_go(traj, rewards, cfg.beta)[trained], cfg.samples_per_state)
    return adv.clamp(-cfg.adv_clip, cfg.adv_clip), scale


def train_ddpo(policy: FinetunedPolicy, states: torch.Tensor, reward: RewardFn, cfg: DDPOConfig,
               generator: torch.Generator, workdir: Path | None = None, hooks: TrainHooks | None = None,
               progress: bool = False, fingerprint: Any = None) -> dict[str, Any]:
    """`cfg.iterations` DDPO iterations on `policy.model`; the loss logged is -(mean Q - KL / beta)."""
    opt = torch.optim.Adam(policy.model.parameters(), lr=cfg.lr)
    trained = list(policy.trained_steps)
    n_chains = cfg.states_per_iteration * cfg.samples_per_state

    def step(_: int) -> torch.Tensor:
        i = torch.randint(states.shape[0], (cfg.states_per_iteration,), device=states.device, generator=generator)
        traj = policy.rollout(states[i], cfg.samples_per_state, generator)
        with torch.no_grad():
            r = reward(traj.states, traj.actions)
        adv, scale = ddpo_advantages(traj, r, cfg, trained)
        old = traj.log_probs[trained]
        for _epoch in range(cfg.inner_epochs):
            order = torch.randperm(n_chains, device=states.device, generator=generator)
            for rows in order.chunk(cfg.minibatches):
                log_probs, kl = policy.rescore(traj, rows)
                loss = ddpo_loss(log_probs, old[:, rows], adv[:, rows], kl, scale, cfg.estimator, cfg.clip_range)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.model.parameters(), cfg.max_grad_norm)
                opt.step()
        return -(r - traj.kl.sum(0) / cfg.beta).mean()

    policy.model.train()
    record = run_steps(step, cfg.iterations, "finetune (ddpo)", progress=progress, workdir=workdir, hooks=hooks,
                       fingerprint=fingerprint, state={"model": policy.model, "optimizer": opt, "generator": generator})
    samples = cfg.iterations * n_chains
    return record | {"gradient_steps": cfg.iterations * cfg.inner_epochs * cfg.minibatches, "samples": samples,
                     "nfe": samples * (policy.chain.steps + len(trained) * (1 + cfg.inner_epochs))}


def _preset(name: str, **ddpo: Any) -> DDPOConfig:
    return DDPOConfig(**{**pretrain_settings(PRETRAIN_PRESETS[name]), **ddpo})


PRESETS: dict[str, DDPOConfig] = {
    "paper": _preset("paper"),
    "cpu": _preset("cpu", iterations=1_000, states_per_iteration=64, samples_per_state=8, lr=3e-4),
    # `diffbench quick`: about 2 minutes per seed on one core after the shared stages (0.42 s per iteration)
    "quick": _preset("quick", iterations=300, states_per_iteration=64, samples_per_state=8, lr=3e-4),
    "tiny": _preset("tiny", iterations=5, states_per_iteration=8, samples_per_state=4, minibatches=2),
}


class DDPO(FinetuneAlgorithm):
    name = "ddpo"
    description = ("KL-regularised DDPO (Black et al., ICLR 2024, with DPOK's KL to the pretrained chain), not "
                   "the published unregularised method: policy gradient on Q_0 over the denoising chain with a "
                   "leave-one-out group baseline")
    budget_fields = ("behaviour_steps", "q_steps", "iterations")
    config_cls = DDPOConfig
    presets = PRESETS
    stage_fields = finetune_stage_fields(("estimator", "iterations", "states_per_iteration", "samples_per_state",
                                          "inner_epochs", "minibatches", "lr", "clip_range", "adv_clip",
                                          "max_grad_norm"))

    def finetune(self, policy: FinetunedPolicy, states: torch.Tensor, reward: RewardFn, generator: torch.Generator,
                 workdir: Path | None, hooks: TrainHooks | None, progress: bool) -> dict[str, Any]:
        return train_ddpo(policy, states, reward, self.config, generator, workdir, hooks, progress,
                          fingerprint=self.fingerprint("finetune"))
