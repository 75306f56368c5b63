"""What every algorithm made of checkpointed stages shares: shapes, bounds, seeded initialisation,
stage checkpoints that refuse a changed config, resume, and loading a trained policy.

A subclass names its `stages` in order, the config fields each depends on (`stage_fields`), the
stages whose checkpoints make up a trained policy (`policy_stages`), builds its networks in
`build`, and puts a checkpoint's contents back in `restore`.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from envs.dataset import OfflineDataset
from policies.base import Algorithm
from policies.checkpoint import load_checkpoint, save_checkpoint
from policies.errors import CheckpointError, ConfigError
from policies.training import finish_stage, make_generator, resolve_device


class StagedAlgorithm(Algorithm):
    stages: ClassVar[tuple[str, ...]]
    stage_fields: ClassVar[dict[str, tuple[str, ...]]]
    policy_stages: ClassVar[tuple[str, ...]]

    def __init__(self, config: Any, observation_dim: int, action_dim: int, action_low: np.ndarray,
                 action_high: np.ndarray, device: str | None = None):
        self.config = config
        self.device = resolve_device(device or config.device)
        self.dims = {"observation_dim": int(observation_dim), "action_dim": int(action_dim)}
        self.action_low = torch.as_tensor(np.asarray(action_low, np.float32), device=self.device)
        self.action_high = torch.as_tensor(np.asarray(action_high, np.float32), device=self.device)
        self.records: dict[str, dict] = {}
        with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the global RNG
            torch.manual_seed(config.seed)
            self.build(observation_dim, action_dim)
        self._act_generator = make_generator(config.seed + 1, self.device)

    @abstractmethod
    def build(self, observation_dim: int, action_dim: int) -> None:
        """Create the networks (on self.device); runs under a seeded RNG."""

    @abstractmethod
    def restore(self, stage: str, ckpt: dict[str, Any]) -> None:
        """Put what `save(stage, payload)` stored back into the networks."""

    @classmethod
    def for_dataset(cls, dataset: OfflineDataset, config: Any, device: str | None = None) -> "StagedAlgorithm":
        t = dataset.transitions
        return cls(config, t.obs_dim, t.action_dim, dataset.action_space.low, dataset.action_space.high, device)

    def seed(self, seed: int) -> None:
        self._act_generator = make_generator(seed, self.device)

    # -- shapes

    def check_dataset(self, dataset: OfflineDataset) -> None:
        t = dataset.transitions
        if t.action_dim != self.dims["action_dim"] or t.obs_dim != self.dims["observation_dim"]:
            raise ConfigError(f"{dataset.id} has observation dim {t.obs_dim} and action dim {t.action_dim}, but this "
                              f"{self.name} was built for {self.dims['observation_dim']} and {self.dims['action_dim']}")

    def observations(self, observations: np.ndarray) -> torch.Tensor:
        obs = torch.as_tensor(np.asarray(observations, np.float32), device=self.device)
        if obs.dim() != 2 or obs.shape[1] != self.dims["observation_dim"]:
            raise ConfigError(f"{self.name}: observations must have shape (batch, {self.dims['observation_dim']}), "
                              f"got {tuple(obs.shape)}")
        return obs

    def clip(self, actions: torch.Tensor) -> np.ndarray:
        return torch.clamp(actions, self.action_low, self.action_high).cpu().numpy()

    # -- stage checkpoints

    def fingerprint(self, stage: str) -> dict[str, Any]:
        """The config fields `stage` and the stages before it depend on."""
        mine = self.config.to_dict()
        keys = [k for name in self.stages[: self.stages.index(stage) + 1] for k in self.stage_fields[name]]
        return {k: mine[k] for k in keys}

    def save(self, workdir: Path | None, stage: str, payload: dict[str, Any]) -> None:
        if workdir is not None:
            save_checkpoint(Path(workdir) / f"{stage}.pt", algorithm=self.name, stage=stage, dims=self.dims,
                            payload={"config": self.config.to_dict(), "record": self.records.get(stage, {}),
                                     "action_low": self.action_low.cpu(), "action_high": self.action_high.cpu(),
                                     **payload})
            finish_stage(Path(workdir), stage)

    def resume(self, workdir: Path | None) -> set[str]:
        """Restore every checkpointed stage whose config matches, in order, up to the first missing one."""
        done: set[str] = set()
        if workdir is None:
            return done
        for stage in self.stages:
            path = Path(workdir) / f"{stage}.pt"
            if not path.exists():
                break
            ckpt = load_checkpoint(path, algorithm=self.name, stage=stage, dims=self.dims, map_location=self.device)
            mine = self.fingerprint(stage)
            diff = [k for k in mine if ckpt["config"].get(k) != mine[k]]
            if diff:
                raise CheckpointError(f"{path} was made with a different config ({', '.join(diff)} differ); "
                                      f"use a new run directory, or delete {stage}.pt and the stages after it")
            self.records[stage] = ckpt.get("record", {})
            self.restore(stage, ckpt)
            done.add(stage)
        return done

    @classmethod
    def load(cls, workdir: Path, dataset: OfflineDataset | None = None, device: str = "auto") -> "StagedAlgorithm":
        workdir = Path(workdir)
        paths = {s: workdir / f"{s}.pt" for s in cls.policy_stages}
        missing = [s for s, p in paths.items() if not p.is_file()]
        if missing:
            raise CheckpointError(f"{workdir} has no trained {cls.name} policy (missing "
                                  f"{', '.join(m + '.pt' for m in missing)}); run `fit` to finish training first")
        last = cls.policy_stages[-1]
        head = load_checkpoint(paths[last], algorithm=cls.name, stage=last, map_location="cpu")
        d = head["dims"]
        if dataset is not None:
            t = dataset.transitions
            if (t.obs_dim, t.action_dim) != (d["observation_dim"], d["action_dim"]):
                raise CheckpointError(f"{workdir} was trained for observation dim {d['observation_dim']} and action dim "
                                      f"{d['action_dim']}; {dataset.id} has {t.obs_dim} and {t.action_dim}")
        algo = cls(cls.config_cls.from_dict(head["config"]), d["observation_dim"], d["action_dim"],
                   head["action_low"].numpy(), head["action_high"].numpy(), device)
        for stage in cls.policy_stages:
            ckpt = load_checkpoint(paths[stage], algorithm=cls.name, stage=stage, dims=algo.dims, map_location=algo.device)
            algo.records[stage] = ckpt.get("record", {})
            algo.restore(stage, ckpt)
        return algo
