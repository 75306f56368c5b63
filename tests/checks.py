"""Checks every staged algorithm's tests make: a run cut mid-stage (everything after its last mid-stage
checkpoint lost, as with SIGKILL) resumes to the bit, and acting is batched, in bounds, reproducible
and the same after reloading."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from policies.core.training import TrainHooks


class Killed(Exception):
    pass


def cut_and_resume(cls: Any, config: Any, dataset: Any, root: Path, stage: str, at: int = 15, every: int = 10) -> dict:
    """Runs `root/cut` (killed at step `at` of `stage`, then resumed) and `root/straight`; returns the resumed
    run's record, after checking that it picked up from the last mid-stage checkpoint."""

    def kill(at_stage: str, step: int) -> None:
        if at_stage == stage and step == at:
            raise Killed

    with pytest.raises(Killed):
        cls.for_dataset(dataset, config).fit(dataset, root / "cut",
                                             hooks=TrainHooks(checkpoint_every=every, eval_every=at, on_eval=kill))
    assert (root / "cut" / f"{stage}.partial.pt").exists()
    resumed = cls.for_dataset(dataset, config).fit(dataset, root / "cut", hooks=TrainHooks(checkpoint_every=every))
    assert resumed["stages"][stage]["resumed_at"] == at // every * every
    cls.for_dataset(dataset, config).fit(dataset, root / "straight", hooks=TrainHooks(checkpoint_every=every))
    return resumed


def same_checkpoints(root: Path, name: str, keys: tuple[str, ...]) -> bool:
    """Whether `name`.pt of the cut and the straight run hold identical tensors under `keys`."""
    a = torch.load(root / "cut" / f"{name}.pt", weights_only=True)
    b = torch.load(root / "straight" / f"{name}.pt", weights_only=True)
    return all(torch.equal(a[key][p], b[key][p]) for key in keys for p in a[key])


def check_acting(algo: Any, dataset: Any, workdir: Path) -> None:
    """`algo`, fitted into `workdir`: 7 actions at once, inside the bounds, equal under the same seed and
    equal again from the checkpoints."""
    obs = dataset.transitions.observations[:7]
    algo.seed(3)
    a = algo.act(obs)
    algo.seed(3)
    assert a.shape == (7, dataset.transitions.action_dim) and np.array_equal(a, algo.act(obs))
    assert np.all(a >= dataset.action_space.low) and np.all(a <= dataset.action_space.high)
    loaded = type(algo).load(workdir, dataset)
    loaded.seed(3)
    assert np.array_equal(loaded.act(obs), a)
