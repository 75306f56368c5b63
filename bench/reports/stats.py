"""The reporting statistics of Agarwal et al. 2021 ("Deep RL at the edge of the statistical precipice").

The same estimators as `rliable` (whose `arch` dependency does not import with pandas 3), on numpy.
Scores come as one (runs, tasks) matrix per algorithm: a run is one seed's score on a task (here its
mean over evaluation episodes). Intervals come from the stratified bootstrap: runs are resampled with
replacement within each task, never across tasks, so a task with few seeds keeps its weight; the
interval is the percentile interval of the resampled statistic.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

# every statistic takes (runs, tasks) or a stack (..., runs, tasks) of bootstrap replicates
Statistic = Callable[[np.ndarray], "np.ndarray | float"]


def iqm(scores: np.ndarray) -> np.ndarray | float:
    """Interquartile mean over every run of every task: the mean of the middle 50% (scipy's trim_mean(0.25))."""
    scores = np.asarray(scores, dtype=np.float64)
    flat = np.sort(scores.reshape(*scores.shape[:-2], -1), axis=-1)
    cut = int(0.25 * flat.shape[-1])
    return _out(flat[..., cut : flat.shape[-1] - cut].mean(axis=-1))


def mean(scores: np.ndarray) -> np.ndarray | float:
    """Mean over tasks of each task's mean over runs."""
    return _out(np.mean(np.mean(scores, axis=-2), axis=-1))


def median(scores: np.ndarray) -> np.ndarray | float:
    """Median over tasks of each task's mean over runs."""
    return _out(np.median(np.mean(scores, axis=-2), axis=-1))


def optimality_gap(scores: np.ndarray, gamma: float = 100.0) -> np.ndarray | float:
    """How far the scores fall short of `gamma` (100 = expert on the normalised scale); overshoot earns nothing."""
    scores = np.asarray(scores, dtype=np.float64)
    return _out(gamma - np.mean(np.minimum(scores, gamma).reshape(*scores.shape[:-2], -1), axis=-1))


def _out(value: np.ndarray) -> np.ndarray | float:
    """A float for one (runs, tasks) matrix; an array for a stack of bootstrap replicates."""
    return float(value) if np.ndim(value) == 0 else value


AGGREGATES: dict[str, Statistic] = {"IQM": iqm, "mean": mean, "median": median, "optimality gap": optimality_gap}


def _check(scores: np.ndarray, name: str = "scores") -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or 0 in scores.shape:
        raise ValueError(f"{name} must be a (runs, tasks) matrix with at least one of each, got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError(f"{name} holds NaN or inf; drop or fix those runs before computing statistics")
    return scores


def stratified_resample(scores: np.ndarray, rng: np.random.Generator, reps: int | None = None) -> np.ndarray:
    """Bootstrap replicates (reps, runs, tasks), or one (runs, tasks): each task's column resampled with
    replacement from its own runs."""
    runs, tasks = scores.shape
    rows = rng.integers(0, runs, size=(reps or 1, runs, tasks))
    out = scores[rows, np.arange(tasks)]
    return out if reps is not None else out[0]


def _percentiles(values: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1.0 - confidence) / 2
    return np.quantile(values, alpha, axis=0), np.quantile(values, 1 - alpha, axis=0)


def bootstrap_interval(statistic: Statistic, scores: np.ndarray, reps: int = 2000, confidence: float = 0.95,
                       seed: int = 0) -> tuple[float, float, float]:
    """(point estimate, lower, upper) of `statistic` with a stratified-bootstrap percentile interval."""
    scores = _check(scores)
    point = float(statistic(scores))
    if scores.shape[0] == 1:  # one run per task: no spread to resample
        return point, point, point
    low, high = _percentiles(statistic(stratified_resample(scores, np.random.default_rng(seed), reps)), confidence)
    return point, float(low), float(high)


def aggregate_intervals(scores: Mapping[str, np.ndarray], reps: int = 2000, confidence: float = 0.95,
                        seed: int = 0, gamma: float = 100.0) -> dict[str, dict[str, tuple[float, float, float]]]:
    """algorithm -> metric -> (estimate, lower, upper) for IQM, mean, median and optimality gap."""
    metrics = {**AGGREGATES, "optimality gap": lambda s: optimality_gap(s, gamma)}
    return {algo: {name: bootstrap_interval(fn, m, reps, confidence, seed) for name, fn in metrics.items()}
            for algo, m in scores.items()}


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray | float:
    """P(X > Y): per task, the share of (run of X, run of Y) pairs X wins (ties count half); averaged over tasks.
    Takes (runs, tasks) matrices or equal stacks of them."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"x and y must cover the same tasks, got {x.shape[-1]} and {y.shape[-1]} columns")
    a, b = x[..., :, None, :], y[..., None, :, :]
    pairs = (a > b).mean(axis=(-3, -2)) + 0.5 * (a == b).mean(axis=(-3, -2))
    return _out(pairs.mean(axis=-1))


def probability_of_improvement_interval(x: np.ndarray, y: np.ndarray, reps: int = 2000, confidence: float = 0.95,
                                        seed: int = 0) -> tuple[float, float, float]:
    """P(X > Y) with both algorithms' runs resampled within each task, independently."""
    x, y = _check(x, "x"), _check(y, "y")
    point = float(probability_of_improvement(x, y))
    if x.shape[0] == 1 and y.shape[0] == 1:
        return point, point, point
    rng = np.random.default_rng(seed)
    low, high = _percentiles(probability_of_improvement(stratified_resample(x, rng, reps),
                                                        stratified_resample(y, rng, reps)), confidence)
    return point, float(low), float(high)


def performance_profile(scores: np.ndarray, taus: Sequence[float]) -> np.ndarray:
    """For each threshold tau, the fraction of runs scoring above it (each task weighted equally).
    (runs, tasks) -> (len(taus),); a stack (reps, runs, tasks) -> (reps, len(taus))."""
    scores = np.asarray(scores, dtype=np.float64)
    above = scores[..., None] > np.asarray(taus, dtype=np.float64)
    return above.mean(axis=-3).mean(axis=-2)


def performance_profile_band(scores: np.ndarray, taus: Sequence[float], reps: int = 2000, confidence: float = 0.95,
                             seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(profile, lower, upper) over `taus`, the band from the stratified bootstrap."""
    scores = _check(scores)
    point = performance_profile(scores, taus)
    if scores.shape[0] == 1:
        return point, point.copy(), point.copy()
    low, high = _percentiles(performance_profile(stratified_resample(scores, np.random.default_rng(seed), reps), taus),
                             confidence)
    return point, low, high
