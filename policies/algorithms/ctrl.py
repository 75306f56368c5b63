"""CTRL: adding a new control y to a pretrained diffusion policy by RL (Zhao et al., ICLR 2025).

From an offline dataset of (s, a, y) it samples p(a | s, y) ∝ mu_theta(a | s) p(y | s, a):
  1. classifier  p_phi(y | s, a) on clean actions (no noisy-input classifier), calibrated on held-out
                 data by temperature scaling (cross-fitted; T = 1 where that does not help); its
                 calibration error is recorded
  2. augment     mu_theta with an embedding of y added to its time embedding, zero-initialised, so the
                 conditioned model starts as exactly mu_theta (KL = 0)
  3. fine-tune   by reward backpropagation through the reparameterised chain (`FinetunedPolicy.pathwise`):
                   max  E_y E_{s, chain_theta(. | s, y)} [ log p_phi(y | s, a) ] - (1/beta) KL(P_theta || P_pre)
                 beta = 1 (reward weight = KL weight) makes the optimum the exact conditional; larger beta
                 sharpens it like a guidance scale. Truncated backpropagation (`truncate` = K') as an option.
The KL is summed over action dimensions (the official code averages it, which multiplies beta by the
dimension and moves the optimum off the conditional). Each chain's label is drawn uniformly over the
classes, so the model conditions on every class; with several controls each label is also NULL with
probability `null_fraction`, so any subset conditions, and the reward sums log p_phi_j(y_j | s, a) over
the given ones: p(a | s, y_1, y_2) ∝ mu p(y_1 | s, a) p(y_2 | s, a) when the controls are conditionally
independent given (s, a), with classifiers trained on separately labelled data (the paper's claim).

Where this departs from the official code (zhaoyl18/CTRL), and why. Each choice here keeps the objective
whose optimum is the exact conditional, which the toys check against exact samples (results/ctrl.md):
- The whole network copy is trained, with the label embedding, at one learning rate (official: LoRA
  adapters plus the label embedding at its own rate). The action networks are small; LoRA saves memory
  on image U-Nets and would restrict the family the optimum is sought in.
- Adam without weight decay (official: AdamW, 0.1): decay pulls the weights toward zero, not toward
  mu_theta, and so moves the optimum off the conditional.
- Gradient-norm clip 1.0 (official 5.0), the value the other fine-tuning methods here use.
- Truncation is contiguous: the reward's and the KL's gradients flow through the last K' steps only
  (official: each step's input detached independently at random). Contiguous truncation is DRaFT-K's
  biased but low-variance estimator; `truncate = 0`, the default, backpropagates through every step.
- beta = 1 with the KL summed over action dimensions and steps (official: reward weight 0.1 and an
  averaged KL weighted 0.01, so almost no KL). With summed KL and beta = 1 the optimum is mu p(y|.);
  the official weights target a much sharper law than the conditional the paper derives.

In offline RL the default control is "high return-to-go": y = 1 when the discounted return-to-go of
(s, a) in its own episode is above the dataset's `label_quantile`; the policy acts conditioned on y = 1.
On maze data, whose episodes are cut at each goal reached, reading the returns over the continuing stream
instead (SfBC's rule there) was measured and rejected: after an arrival the next goal is far, so the top
returns are slow approaches, and the classifier's action gradient pointed away from the noise-free
controller's action (mean cosine -0.15 to -0.25 on 3 seeds; +0.04 to +0.12 within episodes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from envs.dataset import OfflineDataset
from envs.transitions import Transitions
from policies import config as cfg_tools
from policies.core.classifier import Classifier, calibrate, check_labels, split, train_classifier
from policies.core.conditioning import NULL, ConditionalDiffusion, LabelBlind, split_labels, with_labels
from policies.errors import ConfigError
from policies.algorithms.finetune import (FinetuneAlgorithm, FinetuneConfig, FinetunedPolicy, RewardFn, check_rewards,
                               finetune_stage_fields)
from policies.algorithms.pretrain import PRETRAIN_FIELDS, PRETRAIN_PRESETS, pretrain_settings
from policies.core.training import TrainHooks, run_steps, stage_generator


@dataclass(frozen=True)
class CTRLConfig(FinetuneConfig):
    beta: float = 1.0  # reward weight / KL weight; 1: the exact conditional mu(a|s) p(y|s,a)
    # the control: y = 1 when the discounted return-to-go (discount `gamma`) is above this quantile
    label_quantile: float = 0.8
    act_label: int = 1  # the label acted on (1: high return-to-go)
    # stage "classifier": p_phi(y | s, a) on clean actions
    classifier_hidden: int = 256
    classifier_layers: int = 3
    classifier_steps: int = 20_000
    classifier_batch: int = 256
    classifier_lr: float = 3e-4
    holdout: float = 0.2  # held out of the classifier's fit: half sets the temperature, half measures calibration
    # stage "finetune": reward backpropagation
    iterations: int = 5_000
    batch: int = 256  # chains per iteration, each from a dataset state with a random label
    lr: float = 1e-4
    truncate: int = 0  # backpropagate through the last K' steps only; 0: through all K
    max_grad_norm: float = 1.0
    null_fraction: float = 0.25  # with several controls: chance that a chain leaves a control unlabelled

    def __post_init__(self) -> None:
        self.check_finetune("ctrl")
        cfg_tools.check_bounds(self, "ctrl", at_least_one=("classifier_hidden", "classifier_layers", "classifier_batch",
                                                           "batch"),
                               non_negative=("classifier_steps", "iterations"),
                               positive=("classifier_lr", "lr", "max_grad_norm"))
        for name in ("label_quantile", "holdout"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(f"ctrl: {name} must be in (0, 1), got {getattr(self, name)}")
        if not 0 <= self.null_fraction < 1:
            raise ConfigError(f"ctrl: null_fraction must be in [0, 1), got {self.null_fraction}")
        if self.act_label not in (0, 1):
            raise ConfigError(f"ctrl: act_label must be 0 (not high return-to-go) or 1 (high), got {self.act_label}")
        if not 0 <= self.truncate <= self.chain_steps:
            raise ConfigError(f"ctrl: truncate must be in [0, chain_steps={self.chain_steps}] (0: backpropagate "
                              f"through every step), got {self.truncate}")


def return_labels(transitions: Transitions, gamma: float, quantile: float) -> tuple[torch.Tensor, float]:
    """y = 1 where the discounted return-to-go exceeds its `quantile` over the dataset; (labels, threshold)."""
    rtg = transitions.discounted_returns_to_go(gamma)
    threshold = float(np.quantile(rtg.numpy(), quantile))
    return (rtg > threshold).long(), threshold


def classifier_reward(classifiers: Sequence[Classifier], low: torch.Tensor | None = None,
                      high: torch.Tensor | None = None) -> RewardFn:
    """([s, y], a) -> sum over the labelled controls of log p_phi_j(y_j | s, a), a clipped to the bounds as acted."""

    def reward(extended: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        states, labels = split_labels(extended, len(classifiers))
        if low is not None:
            actions = torch.clamp(actions, low, high)
        total = torch.zeros(actions.shape[0], device=actions.device)
        for j, clf in enumerate(classifiers):
            y = labels[:, j]
            total = total + torch.where(y != NULL, clf.log_prob(states, actions, y.clamp(min=0)), 0.0)
        return total

    return reward


def draw_labels(n: int, classes: Sequence[int], null_fraction: float, generator: torch.Generator,
                device: torch.device) -> torch.Tensor:
    """(n, c) labels, each uniform over its classes; NULL with probability `null_fraction` when c > 1."""
    labels = torch.stack([torch.randint(c, (n,), device=device, generator=generator) for c in classes], 1)
    if len(classes) > 1 and null_fraction > 0:
        labels[torch.rand(labels.shape, device=device, generator=generator) < null_fraction] = NULL
    return labels


def train_ctrl(policy: FinetunedPolicy, states: torch.Tensor, classes: Sequence[int], reward: RewardFn,
               cfg: CTRLConfig, generator: torch.Generator, workdir: Path | None = None,
               hooks: TrainHooks | None = None, progress: bool = False, fingerprint: Any = None) -> dict[str, Any]:
    """`cfg.iterations` steps of reward backpropagation; the loss logged is -(E log p(y|s,a) - KL / beta)."""
    params = [p for p in policy.model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    n = states.shape[0]
    checked = []

    def step(_: int) -> torch.Tensor:
        i = torch.randint(n, (cfg.batch,), device=states.device, generator=generator)
        extended = with_labels(states[i], draw_labels(cfg.batch, classes, cfg.null_fraction, generator, states.device))
        actions, kl = policy.pathwise(extended, generator, cfg.truncate)
        r = reward(extended, actions)
        if not checked:  # the first batch's rewards, before any update, must be finite
            check_rewards(r.detach(), "the first chains")
            checked.append(True)
        loss = (kl.sum(0) / cfg.beta - r).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        return loss.detach()

    policy.model.train()
    record = run_steps(step, cfg.iterations, "finetune (ctrl)", progress=progress, workdir=workdir, hooks=hooks,
                       fingerprint=fingerprint, state={"model": policy.model, "optimizer": opt, "generator": generator})
    policy.model.eval()
    samples = cfg.iterations * cfg.batch
    trained = len(policy.trained_steps)
    return record | {"gradient_steps": cfg.iterations, "samples": samples,
                     "nfe": samples * (policy.chain.steps + trained)}  # forward evaluations, as DDPO counts them


def _preset(name: str, **ctrl: Any) -> CTRLConfig:
    return CTRLConfig(**{**pretrain_settings(PRETRAIN_PRESETS[name]), **ctrl})


PRESETS: dict[str, CTRLConfig] = {
    "paper": _preset("paper"),
    "cpu": _preset("cpu", classifier_hidden=128, classifier_steps=5_000, iterations=1_000, batch=128, lr=3e-4),
    # `diffbench quick`: about 1 minute per seed on one core after the behaviour stage (0.12 s per iteration)
    "quick": _preset("quick", classifier_hidden=128, classifier_steps=3_000, iterations=500, batch=128, lr=3e-4),
    "tiny": _preset("tiny", classifier_hidden=32, classifier_steps=20, classifier_batch=32, iterations=5, batch=16),
}

CLASSIFIER_FIELDS = ("gamma", "label_quantile", "classifier_hidden", "classifier_layers", "classifier_steps",
                     "classifier_batch", "classifier_lr", "holdout")


class CTRL(FinetuneAlgorithm):
    """Stages: behaviour (shared with QGPO and DDPO), classifier, finetune. One control: return-to-go."""

    name = "ctrl"
    description = ("CTRL (Zhao et al., ICLR 2025): a high-return-to-go control added to the behaviour model by "
                   "backpropagating a calibrated classifier's log-probability, with the KL to the pretrained "
                   "chain")
    budget_fields = ("behaviour_steps", "classifier_steps", "iterations")
    config_cls = CTRLConfig
    presets = PRESETS
    stages = ("behaviour", "classifier", "finetune")
    shared_stages = ("behaviour",)
    stage_fields = finetune_stage_fields(("iterations", "batch", "lr", "truncate", "max_grad_norm", "null_fraction"),
                                         before={"behaviour": PRETRAIN_FIELDS["behaviour"],
                                                 "classifier": CLASSIFIER_FIELDS})
    classes = (2,)

    def build(self, observation_dim: int, action_dim: int) -> None:
        super().build(observation_dim, action_dim)
        cfg = self.config
        self.classifier = Classifier(observation_dim, action_dim, self.classes[0], cfg.classifier_hidden,
                                     cfg.classifier_layers).to(self.device)

    def fit_reward_model(self, dataset: OfflineDataset, t: Any, workdir: Path | None, hooks: TrainHooks | None,
                         progress: bool) -> None:
        cfg, dev = self.config, self.device
        self.fit_behaviour_stage(t, workdir, hooks, progress)
        with self.stage("classifier", workdir, hooks) as todo:
            if todo:
                labels, threshold = return_labels(dataset.transitions, cfg.gamma, cfg.label_quantile)
                labels = check_labels(labels, self.classes[0], len(t), f"{dataset.id}: return-to-go labels "
                                      f"(quantile {cfg.label_quantile})").to(dev)
                fit_rows, temp_rows, measure_rows = (r.to(dev) for r in split(
                    len(t), cfg.holdout, stage_generator(cfg.seed, "classifier split", torch.device("cpu"))))
                gen = stage_generator(cfg.seed, "classifier", dev)
                record = train_classifier(self.classifier, t.observations[fit_rows], t.actions[fit_rows],
                                          labels[fit_rows], steps=cfg.classifier_steps, batch=cfg.classifier_batch,
                                          lr=cfg.classifier_lr, generator=gen, progress=progress, workdir=workdir,
                                          hooks=hooks, fingerprint=self.fingerprint("classifier"))
                calibration = calibrate(self.classifier, t.observations, t.actions, labels, temp_rows, measure_rows, gen)
                self.records["classifier"] = record | {"calibration": calibration, "threshold": threshold,
                                                       "positive_fraction": float(labels.float().mean())}
                if hooks is not None and hooks.log:
                    hooks.log(f"classifier: return-to-go above {threshold:.4g} for {labels.float().mean():.1%} of "
                              f"transitions; held-out accuracy {calibration['accuracy']:.3f}, ECE "
                              f"{calibration['ece_raw']:.4f} -> {calibration['ece']:.4f} at T = "
                              f"{calibration['temperature']:.3f} ({calibration['temperature_rule']})")
                self.save(workdir, "classifier", {"classifier": self.classifier.state_dict()})

    def reward(self) -> RewardFn:
        return classifier_reward([self.classifier], self.action_low, self.action_high)

    def new_policy(self) -> FinetunedPolicy:
        cfg = self.config
        return FinetunedPolicy(LabelBlind(self.behaviour, len(self.classes)), cfg.chain_spec(), cfg.train_last,
                               model=ConditionalDiffusion(self.behaviour, self.classes))

    def policy_states(self, observations: torch.Tensor) -> torch.Tensor:
        labels = torch.full((observations.shape[0], len(self.classes)), self.config.act_label, device=observations.device)
        return with_labels(observations, labels)

    def finetune(self, policy: FinetunedPolicy, states: torch.Tensor, reward: RewardFn, generator: torch.Generator,
                 workdir: Path | None, hooks: TrainHooks | None, progress: bool) -> dict[str, Any]:
        return train_ctrl(policy, states, self.classes, reward, self.config, generator, workdir, hooks, progress,
                          fingerprint=self.fingerprint("finetune"))

    def stage_steps(self) -> dict[str, int]:
        return {"behaviour": self.config.behaviour_steps, "classifier": self.config.classifier_steps}

    def restore(self, stage: str, ckpt: dict[str, Any]) -> None:
        if stage == "classifier":
            self.classifier.load_state_dict(ckpt["classifier"])
        else:
            super().restore(stage, ckpt)
