"""Normalised scores: 100 * (R - random) / (expert - random), the D4RL convention.

Minari datasets carry their references in metadata (`ref_min_score`, `ref_max_score`); legacy
D4RL ids use D4RL's published table (`envs/data/d4rl_reference_scores.csv`, from d4rl/infos.py).
"""

from __future__ import annotations

import csv
from functools import lru_cache
from importlib import resources

import numpy as np

from envs.errors import DatasetError


@lru_cache(maxsize=1)
def d4rl_reference_table() -> dict[str, tuple[float, float]]:
    """D4RL id -> (ref_min_score, ref_max_score)."""
    text = resources.files("envs").joinpath("data/d4rl_reference_scores.csv").read_text()
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    return {r["dataset"]: (float(r["ref_min_score"]), float(r["ref_max_score"])) for r in rows}


def normalized_score(returns: np.ndarray | float, ref_min: float | None, ref_max: float | None, name: str = "dataset") -> np.ndarray:
    if ref_min is None or ref_max is None:
        raise DatasetError(
            f"{name} has no reference scores (ref_min_score/ref_max_score), so its returns cannot be "
            f"normalised; report raw returns or add the references to the dataset's metadata"
        )
    if ref_max == ref_min:
        raise DatasetError(f"{name}: ref_max_score equals ref_min_score ({ref_min}); the normalised score is undefined")
    return 100.0 * (np.asarray(returns, dtype=np.float64) - ref_min) / (ref_max - ref_min)
