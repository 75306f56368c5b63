"""Exact samples of the guided target p(x) ∝ mu(x) exp(beta Q(x)), and the noise floor of a distance.

Rejection sampling from the behaviour: accept x ~ mu with probability exp(beta (Q(x) - 1)), which
is at most 1 because Q <= 1. Accepted points are i.i.d. draws from the target, exactly, at any
sample size (self-normalised importance resampling is exact only in the limit). The price is the
acceptance rate E_mu[exp(beta (Q - 1))], reported so the cost is visible.
"""

from __future__ import annotations

import numpy as np

from envs.errors import DatasetError
from envs.toy.distance import mmd_rbf, sliced_wasserstein
from envs.toy.tasks import ToyTask


def sample_target(task: ToyTask, beta: float, n: int, rng: np.random.Generator, batch: int = 500_000) -> tuple[np.ndarray, float]:
    """`n` exact target samples and the acceptance rate observed while drawing them."""
    if beta < 0:
        raise DatasetError(f"beta must be >= 0, got {beta}")
    kept, drawn, accepted = [], 0, 0
    while accepted < n:
        x = task.sample(batch, rng)
        q = task.q(x)
        if q.max() > 1 + 1e-12 or q.min() < -1e-12:
            raise DatasetError(f"toy task {task.name}: Q left [0, 1] (range {q.min()}..{q.max()})")
        keep = rng.uniform(size=batch) < np.exp(beta * (q - 1.0))
        kept.append(x[keep])
        drawn += batch
        accepted += int(keep.sum())
    return np.concatenate(kept)[:n], accepted / drawn


def noise_floor(task: ToyTask, beta: float, n: int, repeats: int, seed: int) -> dict[str, float]:
    """Distances between two independent exact samples of size n: what a perfect sampler scores.

    Also the distance from behaviour samples to the target, the score of ignoring guidance.
    """
    rng = np.random.default_rng(seed)
    swd, mmd, swd_behaviour, rates = [], [], [], []
    for r in range(repeats):
        a, rate_a = sample_target(task, beta, n, rng)
        b, rate_b = sample_target(task, beta, n, rng)
        mu = task.sample(n, rng)
        swd.append(sliced_wasserstein(a, b, seed=r))
        mmd.append(mmd_rbf(a, b))
        swd_behaviour.append(sliced_wasserstein(mu, b, seed=r))
        rates += [rate_a, rate_b]
    return {
        "swd_floor_mean": float(np.mean(swd)),
        "swd_floor_std": float(np.std(swd, ddof=1)) if repeats > 1 else 0.0,
        "mmd_floor_mean": float(np.mean(mmd)),
        "mmd_floor_std": float(np.std(mmd, ddof=1)) if repeats > 1 else 0.0,
        "swd_behaviour_mean": float(np.mean(swd_behaviour)),
        "acceptance_rate": float(np.mean(rates)),
    }
