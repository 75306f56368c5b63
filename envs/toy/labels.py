"""Controls with a known p(y | x) on the toy bandits: ground truth for adding a control (CTRL,
classifier guidance, classifier-free guidance).

A control labels a point x with a class y drawn from p(y | x); its exact conditional
p(x | y) ∝ mu(x) p(y | x) is sampled by rejection from any sampler of mu (accept with probability
p(y | x) <= 1), and two controls labelled independently given x compose exactly:
p(x | y1, y2) ∝ mu(x) p(y1 | x) p(y2 | x). The labels are soft (logistic in a coordinate), so a
classifier has real probabilities to calibrate, not a boundary to memorise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from envs.errors import DatasetError


@dataclass(frozen=True)
class ToyControl:
    name: str
    classes: int
    probs: Callable[[np.ndarray], np.ndarray]  # (n, 2) -> (n, classes), rows summing to 1

    def label(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One label per point, drawn from p(y | x)."""
        p = self.probs(np.asarray(x, np.float64))
        return (rng.uniform(size=(len(p), 1)) > np.cumsum(p, 1)[:, :-1]).sum(1)


def _logistic(coordinate: int, width: float) -> Callable[[np.ndarray], np.ndarray]:
    def probs(x: np.ndarray) -> np.ndarray:
        up = 1.0 / (1.0 + np.exp(-x[:, coordinate] / width))
        return np.stack([1.0 - up, up], 1)

    return probs


# y = 1: "to the right" and "upwards", each soft over about a unit either side of the axis
CONTROLS: dict[str, ToyControl] = {c.name: c for c in (ToyControl("right", 2, _logistic(0, 0.5)),
                                                         ToyControl("up", 2, _logistic(1, 0.5)))}


def get_control(name: str) -> ToyControl:
    if name not in CONTROLS:
        raise DatasetError(f"unknown toy control {name!r}; choose one of {', '.join(CONTROLS)}")
    return CONTROLS[name]


def likelihood(controls: Sequence[ToyControl], labels: Sequence[int]) -> Callable[[np.ndarray], np.ndarray]:
    """x -> prod_j p(y_j | x): the acceptance probability of the exact (composed) conditional."""
    if len(controls) != len(labels):
        raise DatasetError(f"{len(controls)} controls but {len(labels)} labels")
    for c, y in zip(controls, labels):
        if not 0 <= y < c.classes:
            raise DatasetError(f"control {c.name!r} has classes 0..{c.classes - 1}, not {y}")

    def fn(x: np.ndarray) -> np.ndarray:
        out = np.ones(len(x))
        for c, y in zip(controls, labels):
            out *= c.probs(np.asarray(x, np.float64))[:, y]
        return out

    return fn
