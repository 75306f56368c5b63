"""What every algorithm made of checkpointed stages shares: shapes, bounds, seeded initialisation,
stage checkpoints that refuse a changed config, resume, and loading a trained policy.

A subclass names its `stages` in order, the config fields each depends on (`stage_fields`), the
stages whose checkpoints make up a trained policy (`policy_stages`), builds its networks in
`build`, and puts a checkpoint's contents back in `restore`. Its `fit` trains each stage inside
`with self.stage(name, workdir, hooks) as todo:`, which restores the stage instead when it can: from
the run directory, or, for a stage in `shared_stages`, from the harness's store of stages shared
across algorithms (keyed by the stage's config fingerprint; a lock makes one process train it).

Every checkpoint records the dataset it was trained on (`dataset_tag`), so a checkpoint of another
dataset is refused by name, not by a shape error or, worse, silently used.
"""

from __future__ import annotations

import hashlib
import json
from abc import abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import torch

from envs.dataset import OfflineDataset
from policies.base import Algorithm
from policies.core.checkpoint import (content_digest, digest_path, file_digest, file_lock, intact, load_checkpoint, publish, quarantine,
                                      save_checkpoint)
from policies.errors import CheckpointError, ConfigError, CorruptCheckpoint
from policies.core.training import TrainHooks, finish_stage, make_generator, resolve_device

SHARED = "shared"  # the owner recorded in checkpoints of stages any algorithm may restore


def dataset_tag(dataset: OfflineDataset) -> dict[str, Any]:
    """What identifies the data a checkpoint was trained on: id, size, reward transform and a content digest."""
    t = dataset.transitions
    h = hashlib.sha1()
    for array in (t.observations, t.actions, t.rewards, t.next_observations):
        h.update(np.ascontiguousarray(array.cpu().numpy() if isinstance(array, torch.Tensor) else array).tobytes())
    return {"id": dataset.id, "transitions": int(t.actions.shape[0]), "reward_transform": dataset.reward_transform,
            "digest": h.hexdigest()[:16]}


@contextmanager
def reseeded(seed: int) -> Iterator[None]:
    """The global RNG as `build` starts it (seeded by `seed`), restored after: networks of a shared stage that
    another algorithm builds first get the same initial weights here."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class StagedAlgorithm(Algorithm):
    stages: ClassVar[tuple[str, ...]]
    stage_fields: ClassVar[dict[str, tuple[str, ...]]]
    policy_stages: ClassVar[tuple[str, ...]]
    shared_stages: ClassVar[tuple[str, ...]] = ()  # stages whose checkpoints other algorithms may restore
    # stages that read no earlier stage (SRPO's critic beside its behaviour model): their fingerprint is their own
    # fields alone, so that they share checkpoints with an algorithm that trains them first (IDQL's critic)
    independent_stages: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any, observation_dim: int, action_dim: int, action_low: np.ndarray,
                 action_high: np.ndarray, device: str | None = None):
        self.config = config
        self.device = resolve_device(device or config.device)
        self.dims = {"observation_dim": int(observation_dim), "action_dim": int(action_dim)}
        self.action_low = torch.as_tensor(np.asarray(action_low, np.float32), device=self.device)
        self.action_high = torch.as_tensor(np.asarray(action_high, np.float32), device=self.device)
        self.records: dict[str, dict] = {}
        self.restored: dict[str, str] = {}  # stage -> where its checkpoint came from ("run", "shared")
        self.data_tag: dict[str, Any] | None = None
        self.untrained: tuple[str, ...] = ()  # stages whose networks `load` left as built
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

    def counted_cost(self, nfe_per_action: int) -> dict[str, Any]:
        """The cost of an algorithm whose every trained stage's steps are its gradient steps."""
        steps = {s: self.records[s]["steps"] for s in self.stages if s in self.records}
        return {"gradient_steps": steps, "gradient_steps_total": sum(steps.values()), "nfe_per_action": nfe_per_action}

    # -- shapes

    def check_dataset(self, dataset: OfflineDataset) -> None:
        """Shapes must match; remembers the dataset's tag, which every checkpoint then records and checks."""
        t = dataset.transitions
        if t.action_dim != self.dims["action_dim"] or t.obs_dim != self.dims["observation_dim"]:
            raise ConfigError(f"{dataset.id} has observation dim {t.obs_dim} and action dim {t.action_dim}, but this "
                              f"{self.name} was built for {self.dims['observation_dim']} and {self.dims['action_dim']}")
        self.data_tag = dataset_tag(dataset)

    def observations(self, observations: np.ndarray) -> torch.Tensor:
        obs = torch.as_tensor(np.asarray(observations, np.float32), device=self.device)
        if obs.dim() != 2 or obs.shape[1] != self.dims["observation_dim"]:
            raise ConfigError(f"{self.name}: observations must have shape (batch, {self.dims['observation_dim']}), "
                              f"got {tuple(obs.shape)}")
        return obs

    def bounded(self, actions: torch.Tensor) -> torch.Tensor:
        """Actions clamped into the action box (a critic then scores the actions that will be taken)."""
        return torch.maximum(torch.minimum(actions, self.action_high), self.action_low)

    def clip(self, actions: torch.Tensor) -> np.ndarray:
        return self.bounded(actions).cpu().numpy()

    # -- stage checkpoints

    @classmethod
    def stage_fingerprint(cls, config: Any, stage: str) -> dict[str, Any]:
        """The config fields `stage` and the stages before it depend on (`independent_stages`: its own alone)."""
        mine = config.identity()
        before = (stage,) if stage in cls.independent_stages else cls.stages[: cls.stages.index(stage) + 1]
        keys = [k for name in before for k in cls.stage_fields[name]]
        return {k: mine[k] for k in keys if k in mine}

    def fingerprint(self, stage: str) -> dict[str, Any]:
        return self.stage_fingerprint(self.config, stage)

    @classmethod
    def shared_name(cls, config: Any, stage: str) -> str:
        """The name of `stage` in the shared store: the stage and a digest of its fingerprint (what a run's record
        calls `shared_as`), computable from a stored run's config alone."""
        key = json.dumps(cls.stage_fingerprint(config, stage), sort_keys=True, default=str)
        return f"{stage}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"

    def owners(self, stage: str) -> tuple[str, ...]:
        """Whose checkpoints of `stage` this algorithm restores (shared stages: anyone's)."""
        return (SHARED, self.name) if stage in self.shared_stages else (self.name,)

    def save(self, workdir: Path | None, stage: str, payload: dict[str, Any]) -> None:
        # the digest of what the stage made travels in its record, so a run that restores the stage reports the very
        # numbers it restored, and a stage trained again after its checkpoint was lost can be checked against the first
        self.records.setdefault(stage, {})["weights"] = content_digest(payload)
        if workdir is not None:
            save_checkpoint(Path(workdir) / f"{stage}.pt", algorithm=self.owners(stage)[0], stage=stage, dims=self.dims,
                            payload={"config": self.config.to_dict(), "record": self.records.get(stage, {}),
                                     "action_low": self.action_low.cpu(), "action_high": self.action_high.cpu(),
                                     "dataset": self.data_tag or {}, **payload})
            finish_stage(Path(workdir), stage)

    def _restore_from(self, path: Path, stage: str, remedy: str) -> None:
        ckpt = load_checkpoint(path, algorithm=self.owners(stage), stage=stage, dims=self.dims, map_location=self.device)
        mine = self.fingerprint(stage)
        diff = [k for k in mine if ckpt["config"].get(k) != mine[k]]
        if diff:
            raise CheckpointError(f"{path} was made with a different config ({', '.join(diff)} differ); {remedy}")
        theirs = ckpt.get("dataset") or {}
        if self.data_tag and theirs and theirs != self.data_tag:
            raise CheckpointError(f"{path} was trained on {theirs.get('id')} ({theirs.get('transitions')} transitions, "
                                  f"rewards {theirs.get('reward_transform')}, digest {theirs.get('digest')}), not on "
                                  f"{self.data_tag['id']} ({self.data_tag['transitions']} transitions, rewards "
                                  f"{self.data_tag['reward_transform']}, digest {self.data_tag['digest']}); {remedy}")
        self.records[stage] = ckpt.get("record", {})
        self.restore(stage, ckpt)

    def resume(self, workdir: Path | None) -> set[str]:
        """Restore every checkpointed stage whose config matches, in order, up to the first missing one."""
        if workdir is None:
            return set()
        for stage in self.stages:
            path = Path(workdir) / f"{stage}.pt"
            if not path.exists():
                break
            self._restore_from(path, stage, f"use a new run directory, or delete {stage}.pt and the stages after it")
            # a stage this run restored from the shared store before it was cut is still the shared store's: its cost
            # stays with the run that trained it (`shared_marker`)
            self.restored[stage] = "shared" if shared_marker(Path(workdir), stage).exists() else "run"
        return set(self.restored)

    def shared_path(self, stage: str, hooks: TrainHooks | None) -> Path | None:
        """Where `stage` lives in the shared store: named by the stage and a digest of its fingerprint."""
        if stage not in self.shared_stages or hooks is None or hooks.shared_stages is None:
            return None
        return Path(hooks.shared_stages) / f"{self.shared_name(self.config, stage)}.pt"

    @contextmanager
    def stage(self, name: str, workdir: Path | None, hooks: TrainHooks | None = None) -> Iterator[bool]:
        """Yields whether `name` must be trained here (the body then trains and `save`s it).

        A stage restored from the run directory is done. A shared stage is looked up in the shared store
        under its lock: found, it is restored (and linked into the run directory); missing, this process
        trains it while holding the lock, so a second run wanting it waits and then restores it."""
        store = self.shared_path(name, hooks) if workdir is not None else None
        if name in self.restored or store is None:
            if store is not None:  # resumed from the run's own copy of a shared stage
                self.records.setdefault(name, {})["shared_as"] = store.stem
            yield name not in self.restored
            return
        log = hooks.log if hooks is not None and hooks.log else None
        with file_lock(store.with_suffix(".lock"), (lambda: log(f"{name}: another run is training it; waiting"))
                       if log else None):
            restored = False
            if store.exists() and intact(store) is False:
                self._quarantine(store, name, log)
            elif store.exists():
                try:
                    self._restore_from(store, name, f"delete {store} to train it again")
                    restored = True
                except CorruptCheckpoint:
                    self._quarantine(store, name, log)
            if restored:
                Path(workdir).mkdir(parents=True, exist_ok=True)
                shared_marker(Path(workdir), name).write_text(store.name + "\n")  # before the link: see `resume`
                publish(store, Path(workdir) / f"{name}.pt")
                self.restored[name] = "shared"
                self.records.setdefault(name, {})["shared_as"] = store.stem
                if log:
                    log(f"{name}: restored from the shared stage {store.name}")
                yield False
                return
            yield True
            self.records.setdefault(name, {})["shared_as"] = store.stem
            mine = Path(workdir) / f"{name}.pt"
            if mine.exists():
                publish(mine, store)
                digest_path(store).write_text(file_digest(store))

    @staticmethod
    def _quarantine(store: Path, name: str, log: Callable[[str], None] | None) -> None:
        """A shared stage that no longer has its recorded digest, or cannot be read, is moved aside (every run
        linked to it would restore the damage) and the stage is trained again here."""
        aside = quarantine(store)
        if log:
            log(f"{name}: the shared stage {store.name} is damaged; moved to {aside.name}, training it again")

    @classmethod
    def load(cls, workdir: Path, dataset: OfflineDataset | None = None, device: str = "auto",
             every_stage: bool = False) -> "StagedAlgorithm":
        """The stages acting needs (`policy_stages`); the networks of the others (SRPO's behaviour model, a
        fine-tuner's critic) stay as built, untrained, and `untrained` names their stages. `every_stage` restores
        those too, for a study that reads them."""
        workdir = Path(workdir)
        wanted = cls.stages if every_stage else cls.policy_stages
        paths = {s: workdir / f"{s}.pt" for s in wanted}
        missing = [s for s, p in paths.items() if not p.is_file()]
        if missing:
            what = "stage checkpoints" if every_stage else "policy"
            raise CheckpointError(f"{workdir} has no trained {cls.name} {what} (missing "
                                  f"{', '.join(m + '.pt' for m in missing)}); run `fit` to finish training first")
        last = cls.policy_stages[-1]
        owners = (SHARED, cls.name) if last in cls.shared_stages else (cls.name,)
        head = load_checkpoint(paths[last], algorithm=owners, stage=last, map_location="cpu")
        d = head["dims"]
        if dataset is not None:
            t = dataset.transitions
            if (t.obs_dim, t.action_dim) != (d["observation_dim"], d["action_dim"]):
                raise CheckpointError(f"{workdir} was trained for observation dim {d['observation_dim']} and action dim "
                                      f"{d['action_dim']}; {dataset.id} has {t.obs_dim} and {t.action_dim}")
        algo = cls(cls.config_cls.from_dict(head["config"]), d["observation_dim"], d["action_dim"],
                   head["action_low"].numpy(), head["action_high"].numpy(), device)
        for stage in wanted:
            ckpt = load_checkpoint(paths[stage], algorithm=algo.owners(stage), stage=stage, dims=algo.dims,
                                   map_location=algo.device)
            algo.records[stage] = ckpt.get("record", {})
            algo.restore(stage, ckpt)
        algo.untrained = tuple(s for s in cls.stages if s not in wanted)
        return algo


def shared_marker(workdir: Path, stage: str) -> Path:
    """Beside a run's copy of a stage it restored from the shared store: says so to a later resume of the run."""
    return workdir / f"{stage}.shared"


class OneStageAlgorithm(StagedAlgorithm):
    """An algorithm whose critic and policy train together in one stage, "policy" (Diffusion-QL, FQL, DAC): `train`
    trains it; the networks named in `networks` make its checkpoint."""

    stages = ("policy",)
    policy_stages = ("policy",)
    curve_stages = ("policy",)
    critic_stages = ("policy",)
    networks: ClassVar[tuple[str, ...]]

    @abstractmethod
    def train(self, t: Any, workdir: Path | None, hooks: TrainHooks | None, progress: bool) -> dict[str, Any]:
        """The stage on transitions `t` (on the device); returns its record (`run_steps`')."""

    def fit(self, dataset: OfflineDataset, workdir: Path | None = None, progress: bool = False,
            hooks: TrainHooks | None = None) -> dict[str, Any]:
        self.check_dataset(dataset)
        t = dataset.transitions.to(self.device)
        if "policy" not in self.resume(workdir):
            self.records["policy"] = self.train(t, workdir, hooks, progress)
            self.save(workdir, "policy", {name: getattr(self, name).state_dict() for name in self.networks})
        return {"stages": self.records, "resumed": sorted(self.restored), "cost": self.cost}

    def restore(self, stage: str, ckpt: dict[str, Any]) -> None:
        for name in self.networks:
            getattr(self, name).load_state_dict(ckpt[name])
