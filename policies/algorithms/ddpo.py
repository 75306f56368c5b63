"""DDPO: denoising diffusion policy optimisation (Black et al., ICLR 2024), on a pretrained mu_theta.

The denoising chain is an MDP whose final step earns the reward (here Q_0(s, a)); the policy gradient
runs through every step's Gaussian log-density (`policies.algorithms.finetune`). Per iteration (Algorithm 1):
  1. draw `states_per_iteration` dataset states and `samples_per_state` chains for each
  2. r = Q_0(s, a_0); returns-to-go G_k = beta r - sum_{j>k} KL_j (the per-step KL as a cost)
  3. advantages: G_k minus the mean over the chains of the same state (DDPO's per-prompt tracking),
     divided by one batch-wide std, clipped to +-adv_clip
  4. `inner_epochs` passes over the chains in `minibatches`:
       ppo   (DDPO_IS): -min(rho A, clip(rho, 1 +- eps) A),  rho = p_theta(x_{k+1}|x_k) / p_old(x_{k+1}|x_k)
       score (DDPO_SF): -log p_theta(x_{k+1}|x_k) A
     plus the closed-form KL of each trained step, divided by the same std as the advantages.

Where the offline setting changes the paper's settings, and why:
- The reward is Q_0 of a state-conditioned policy, not a prompt-free image score: states are drawn from
  the dataset each iteration; the per-prompt statistics become per-state groups of chains.
- The KL-to-pretrained term (absent from DDPO, added as in DPOK/Uehara et al.) makes the optimum the
  tilt p_pre exp(beta Q); its gradient is divided by the advantages' std too, so the normalisation
  rescales the whole objective and leaves that optimum in place.
- Log-densities are summed over action dimensions (the official code averages over the 16k latent
  dims): its clip range 1e-4 on averaged log-ratios does not transfer; 0.2 is PPO's own on true ratios.
- No weight decay (the official AdamW's 1e-4 would pull the weights toward zero, not toward mu_theta).
- K = 10 steps of the reverse SDE on a quadratic time grid by default (the paper: 50 DDIM steps, eta = 1);
  `chain=ddim chain_grid=uniform` is the paper's chain. At 10 steps DDIM eta = 1 is a poor sampler of
  mu_theta (results/finetune.md, first table), and the optimum is the tilt of the chain's own law.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from policies.errors import ConfigError
from policies.algorithms.finetune import (FinetuneAlgorithm, FinetuneConfig, FinetunedPolicy, RewardFn, finetune_stage_fields,
                               group_advantages, returns_to_go)
from policies.algorithms.pretrain import PRETRAIN_PRESETS, pretrain_settings
from policies import config as cfg_tools
from policies.core.training import TrainHooks, run_steps

ESTIMATORS = ("ppo", "score")


@dataclass(frozen=True)
class DDPOConfig(FinetuneConfig):
    estimator: str = "ppo"  # "ppo" (DDPO_IS) or "score" (DDPO_SF)
    iterations: int = 5_000
    states_per_iteration: int = 256
    samples_per_state: int = 16  # the official per-prompt statistics keep 16 samples
    inner_epochs: int = 1  # the official value
    minibatches: int = 4  # gradient steps per epoch
    lr: float = 1e-4  # the official (with LoRA: 3e-4)
    clip_range: float = 0.2
    adv_clip: float = 10.0  # the official `adv_clip_max`
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
    if estimator == "ppo":
        ratio = torch.exp(log_probs - old_log_probs)
        pg = -torch.minimum(ratio * advantages, ratio.clamp(1 - clip_range, 1 + clip_range) * advantages)
    else:
        pg = -log_probs * advantages
    return (pg + kl / scale).sum(0).mean()


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
        adv, scale = group_advantages(returns_to_go(traj, r, cfg.beta)[trained], cfg.samples_per_state)
        adv = adv.clamp(-cfg.adv_clip, cfg.adv_clip)
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
