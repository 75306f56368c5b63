"""A content checksum of a dataset's episodes, independent of the file format that stores them."""

from __future__ import annotations

import hashlib
from typing import Iterable

import numpy as np

from envs.transitions import Episode


def episodes_checksum(episodes: Iterable[Episode]) -> str:
    """sha256 over every episode's arrays (dtype, shape and bytes), in episode order."""
    h = hashlib.sha256()
    for ep in episodes:
        for name in ("observations", "actions", "rewards", "terminations", "truncations", "next_observations"):
            value = getattr(ep, name)
            if value is None:
                continue
            a = np.ascontiguousarray(value)
            h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
            h.update(a.tobytes())
    return "sha256:" + h.hexdigest()
