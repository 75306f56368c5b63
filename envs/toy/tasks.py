"""Behaviour distributions and Q functions of the CEP paper's 2D bandits.

The shapes and energies follow the official CEP code, with two changes that exactness needs:
Q is a deterministic function of the point x (the original sometimes read a latent label, such as
the mixture component, which a guided sampler cannot see), and points along circles and moons use
i.i.d. uniform angles (the original used an even grid, which is not an i.i.d. sample).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from envs.errors import DatasetError

SQ2 = np.sqrt(2.0)
_8G_CENTERS = 4.0 * np.array([(0, 1), (-1 / SQ2, 1 / SQ2), (-1, 0), (-1 / SQ2, -1 / SQ2),
                              (0, -1), (1 / SQ2, -1 / SQ2), (1, 0), (1 / SQ2, 1 / SQ2)]) / 1.414


@dataclass(frozen=True)
class ToyTask:
    name: str
    sample: Callable[[int, np.random.Generator], np.ndarray]  # (n, 2) behaviour samples
    q: Callable[[np.ndarray], np.ndarray]  # (n, 2) -> (n,) in [0, 1]
    # a task made of separate modes: (n, 2) -> each point's mode (the cell of the nearest centre); None otherwise
    modes: Callable[[np.ndarray], np.ndarray] | None = None
    n_modes: int = 0


def mode_masses(task: ToyTask, x: np.ndarray) -> np.ndarray | None:
    """The share of the points in each of the task's modes (None for a task without modes). A sampler can be
    near a tilted target in SWD and still weigh its modes wrongly; this says how the mass is split."""
    if task.modes is None:
        return None
    return np.bincount(task.modes(np.asarray(x, dtype=np.float64)), minlength=task.n_modes) / len(x)


def mean_q(task: ToyTask, x: np.ndarray) -> float:
    """The mean exact Q of points (a method's samples, or a target's: a method above its target over-tilts)."""
    return float(task.q(np.asarray(x, dtype=np.float64)).mean())


def _8gaussians(n, rng):
    idx = rng.integers(8, size=n)
    return _8G_CENTERS[idx] + rng.normal(scale=0.5 / 1.414, size=(n, 2))


def _8gaussians_modes(x):
    return ((x[:, None, :] - _8G_CENTERS[None]) ** 2).sum(-1).argmin(1)


def _8gaussians_q(x):
    # the nearest centre's index / 7 (the original labelled points by their component)
    return _8gaussians_modes(x) / 7.0


def _swissroll(n, rng):
    t = 1.5 * np.pi * (1 + 2 * rng.uniform(size=n))
    xz = np.stack([t * np.cos(t), t * np.sin(t)], 1) + rng.normal(scale=1.0, size=(n, 2))
    return xz / 5.0


def _swissroll_q(x):
    return np.clip((x**2).sum(1) / 9.0, 0.0, 1.0)


_RING_RADII = 3.0 * np.array([1.0, 0.75, 0.5, 0.25])
_RING_Q = np.array([0.667, 0.333, 1.0, 0.0])


def _rings(n, rng):
    ring = rng.integers(4, size=n)
    angle = rng.uniform(0, 2 * np.pi, size=n)
    x = _RING_RADII[ring, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
    return x + rng.normal(scale=0.08, size=(n, 2))


def _rings_q(x):
    # the nearest ring's energy (thresholds midway between radii; the noise is 5 std from them)
    r = np.sqrt((x**2).sum(1))
    return _RING_Q[np.abs(r[:, None] - _RING_RADII[None]).argmin(1)]


def _moons(n, rng):
    upper = rng.uniform(size=n) < 0.5
    angle = rng.uniform(0, np.pi, size=n)
    outer = np.stack([np.cos(angle), np.sin(angle)], 1)
    inner = np.stack([1 - np.cos(angle), 1 - np.sin(angle) - 0.5], 1)
    x = np.where(upper[:, None], outer, inner) + rng.normal(scale=0.1, size=(n, 2))
    return x * 2 + np.array([-1.0, -0.2])


def _moons_q(x):
    # 1 on the inner (lower) moon: the one whose noiseless arc is nearer
    p = (x - np.array([-1.0, -0.2])) / 2
    return (_to_semicircle(p - np.array([1.0, 0.5]), upper=False) < _to_semicircle(p, upper=True)).astype(np.float64)


def _to_semicircle(c, upper: bool):
    """Distance from c to the unit semicircle (upper or lower half) centred at the origin."""
    beside = c[:, 1] >= 0 if upper else c[:, 1] <= 0
    radial = np.abs(np.hypot(c[:, 0], c[:, 1]) - 1)
    ends = np.minimum(np.hypot(c[:, 0] - 1, c[:, 1]), np.hypot(c[:, 0] + 1, c[:, 1]))
    return np.where(beside, radial, ends)


def _checkerboard(n, rng):
    x1 = rng.uniform(size=n) * 4 - 2
    x2 = rng.uniform(size=n) - rng.integers(0, 2, size=n) * 2 + np.floor(x1) % 2
    return np.stack([x1, x2], 1) * 2


def _checkerboard_q(x):
    return (((x[:, 0] > 0) & (x[:, 0] <= 2)) | (x[:, 0] <= -2)).astype(np.float64)


def _2spirals(n, rng):
    t = np.sqrt(rng.uniform(size=(n, 1))) * 540 * (2 * np.pi) / 360
    arm = np.hstack([-np.cos(t) * t, np.sin(t) * t]) + rng.uniform(size=(n, 2)) * 0.5
    sign = rng.choice([-1.0, 1.0], size=(n, 1))  # which of the two mirrored arms
    return sign * arm / 3 + rng.normal(scale=0.1, size=(n, 2))


def _2spirals_q(x):
    # the original used 1 - t/10 with t the arc parameter; the point's radius is about t/3
    return np.clip(1 - 3 * np.sqrt((x**2).sum(1)) / 10, 0.0, 1.0)


TASKS: dict[str, ToyTask] = {
    t.name: t
    for t in (
        ToyTask("8gaussians", _8gaussians, _8gaussians_q, _8gaussians_modes, 8),
        ToyTask("swissroll", _swissroll, _swissroll_q),
        ToyTask("moons", _moons, _moons_q),
        ToyTask("rings", _rings, _rings_q),
        ToyTask("checkerboard", _checkerboard, _checkerboard_q),
        ToyTask("2spirals", _2spirals, _2spirals_q),
    )
}


def get_task(name: str) -> ToyTask:
    if name not in TASKS:
        raise DatasetError(f"unknown toy task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]
