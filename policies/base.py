"""The interface every algorithm honours, so the harness treats them alike.

An algorithm is built for a dataset's shapes from a typed config, `fit`s on an `OfflineDataset`
(checkpointing into a run directory, resuming from what is there), and `act`s on a batch of
observations. `cost` reports what a result row records: gradient steps and function
evaluations per action.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from envs.dataset import OfflineDataset
from policies.competence import family_shortfall
from policies.core.fqe import CriticSpec
from policies.core.training import TrainHooks


class Algorithm(ABC):
    name: ClassVar[str]
    # one line for listings (`diffbench algorithms`, reports): the method, its paper, and any departure from the
    # published method a reader comparing numbers must know
    description: ClassVar[str] = ""
    config_cls: ClassVar[type]
    presets: ClassVar[dict[str, Any]]
    guided: ClassVar[bool] = False  # True: act(observations, guidance_scale=s) sweeps a guidance scale
    curve_stages: ClassVar[tuple[str, ...]] = ()  # stages during which the policy can act (learning curves)
    budget_fields: ClassVar[tuple[str, ...]] = ()  # the config's step counts a training budget scales (`diffbench budgets`)
    # stages in which the critic `q_function` reads is trained: the harness reads the critic check at their curve
    # points (its course); empty where there is no critic or the algorithm records the course itself (the shared Q_0)
    critic_stages: ClassVar[tuple[str, ...]] = ()
    # preset -> why that preset's budget is known to stop short of the method's competence, with the evidence (the
    # reference's own learning curve): reports show such rows but rank them nowhere, since a method is compared only
    # once trained to competence; a flat curve of our own cannot say this where the method has not begun to learn
    short_of_competence: ClassVar[dict[str, str]] = {}

    @classmethod
    def shortfall(cls, preset: str, dataset: str) -> str | None:
        """Why `preset` stops short of competence on `dataset`: this algorithm's own declaration for the preset, else
        one for every algorithm on the dataset's family (`policies.competence`); None where neither is known."""
        return cls.short_of_competence.get(preset) or family_shortfall(preset, dataset)

    @classmethod
    def domain_overrides(cls, preset: str, family: str) -> dict[str, Any]:
        """Config overrides `preset` takes on datasets of `family` (a paper's per-domain settings, e.g.
        QGPO's M = 32 on AntMaze), applied before the user's own overrides."""
        return {}

    @classmethod
    def dataset_overrides(cls, preset: str, dataset: str) -> dict[str, Any]:
        """Config overrides `preset` takes on one dataset (a paper's per-dataset table, e.g. SRPO's beta), applied
        after `domain_overrides` and before the user's own; `dataset` is the id, matched by its env and quality."""
        return {}

    @classmethod
    def default_guidance_scales(cls, preset: str, family: str) -> tuple[float, ...] | None:
        """The guidance scales a run evaluates when none are asked for; None: the config's own."""
        return None

    def curve_scale(self, stage: str) -> float | None:
        """The guidance scale a learning-curve evaluation made during `stage` acts at (None: the config's)."""
        return None

    def policy_stage(self, scale: float | None) -> str | None:
        """The stage whose training made the policy acting at guidance scale `scale` (None: the config's): the
        x axis of that policy's learning curve."""
        return self.curve_stages[-1] if self.curve_stages else None

    def start(self) -> "Algorithm | None":
        """This algorithm acting as it did before its last stage trained (a fine-tuner: the chain its fine-tuning
        started from), the rest shared. The harness evaluates it on the final episodes beside the trained policy, so
        what that stage added is paired within the run, whichever machine made the stages before it. None: no such
        start (an algorithm trained from scratch)."""
        return None

    def q_function(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
        """The Q(s, a) that improves this algorithm's policy, on raw states (the pessimistic twin where there are two),
        for the harness's critic check; None for an algorithm without one."""
        return None

    def critic_discount(self) -> float:
        """The discount `q_function` values returns at (the critic check's Monte-Carlo returns and reward range)."""
        return float(getattr(self.config, "gamma", 0.99))

    def critic_spec(self) -> "CriticSpec | None":
        """How this algorithm builds and trains its critic, for fitted-Q evaluation of the behaviour policy with it
        (`policies.core.fqe`); read on a freshly built algorithm. None for an algorithm without a critic."""
        return None

    @classmethod
    @abstractmethod
    def for_dataset(cls, dataset: OfflineDataset, config: Any) -> "Algorithm":
        """A fresh algorithm sized for `dataset`'s observations and actions."""

    @abstractmethod
    def fit(self, dataset: OfflineDataset, workdir: Path | None = None, progress: bool = False,
            hooks: TrainHooks | None = None) -> dict[str, Any]:
        """Train every stage not already checkpointed in `workdir` (resuming a stage cut short from its
        last mid-stage checkpoint); returns {"stages": per-stage records, "resumed": [...], "cost": ...}."""

    @abstractmethod
    def act(self, observations: np.ndarray) -> np.ndarray:
        """Actions for a batch of flat observations (B, obs_dim) -> (B, action_dim), inside the action bounds."""

    @abstractmethod
    def seed(self, seed: int) -> None:
        """Reset the sampling noise, so that evaluation is reproducible."""

    @property
    @abstractmethod
    def cost(self) -> dict[str, Any]:
        """gradient_steps (per stage and total) and function evaluations per action."""

    @classmethod
    @abstractmethod
    def load(cls, workdir: Path, dataset: OfflineDataset | None = None, device: str = "auto",
             every_stage: bool = False) -> "Algorithm":
        """A trained algorithm from `workdir`, ready to act; with `dataset`, its shapes are checked against the
        checkpoint. `every_stage`: also the networks acting does not use (a study reading them)."""
