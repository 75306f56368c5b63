"""Observation flattening shared by datasets and environments.

Goal-conditioned tasks (PointMaze, AntMaze) observe a Dict. Datasets and evaluation envs are
flattened by the same rule, Gymnasium's `spaces.flatten`, which orders Dict keys alphabetically:
`achieved_goal`, `desired_goal`, `observation`. The layout is recorded so a model can find each part.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from envs.errors import DatasetError


def flat_layout(space: spaces.Space) -> tuple[tuple[str, int, int], ...]:
    """(key, start, stop) for each part of the flattened vector; one "" entry for a Box."""
    if isinstance(space, spaces.Box):
        return (("", 0, int(np.prod(space.shape))),)
    if isinstance(space, spaces.Dict):
        out, start = [], 0
        for key, sub in space.spaces.items():
            if not isinstance(sub, spaces.Box):
                raise DatasetError(f"observation key {key!r} is {type(sub).__name__}; only Box parts are supported")
            size = int(np.prod(sub.shape))
            out.append((key, start, start + size))
            start += size
        return tuple(out)
    raise DatasetError(f"observation space {space} is not supported; use a Box or a Dict of Boxes")


def flatten_batch(space: spaces.Space, obs: np.ndarray | dict) -> np.ndarray:
    """Flatten a batch (leading axis) of observations exactly as `spaces.flatten` flattens one."""
    if isinstance(space, spaces.Dict):
        if not isinstance(obs, dict):
            raise DatasetError("observations are not a dict but the observation space is a Dict")
        missing = set(space.spaces) - set(obs)
        if missing:
            raise DatasetError(f"observations lack the key(s) {sorted(missing)} of the observation space")
        parts = [np.asarray(obs[k]) for k in space.spaces]
        n = len(parts[0])
        return np.concatenate([p.reshape(n, -1) for p in parts], axis=1)
    arr = np.asarray(obs)
    return arr.reshape(len(arr), -1)


def flat_box(space: spaces.Space) -> spaces.Box:
    """The flattened observation space as a float32 Box."""
    box = spaces.flatten_space(space)
    return spaces.Box(box.low.astype(np.float32), box.high.astype(np.float32), dtype=np.float32)
