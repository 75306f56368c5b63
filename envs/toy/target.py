"""Exact samples of the guided target p(x) ∝ mu(x) exp(beta Q(x)), and the noise floor of a distance.

Rejection sampling from the behaviour: accept x ~ mu with probability exp(beta (Q(x) - 1)), which
is at most 1 because Q <= 1. Accepted points are i.i.d. draws from the target, exactly, at any
sample size (self-normalised importance resampling is exact only in the limit). The price is the
acceptance rate E_mu[exp(beta (Q - 1))], reported so the cost is visible.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from envs.errors import DatasetError
from envs.toy.distance import mmd_rbf, sliced_wasserstein
from envs.toy.tasks import ToyTask


def sample_target(task: ToyTask, beta: float, n: int, rng: np.random.Generator, batch: int = 500_000) -> tuple[np.ndarray, float]:
    """`n` exact target samples and the acceptance rate observed while drawing them."""
    return tilt(lambda k: task.sample(k, rng), task.q, beta, n, rng, batch, name=f"toy task {task.name}")


def tilt(sample: Callable[[int], np.ndarray], q: Callable[[np.ndarray], np.ndarray], beta: float, n: int,
         rng: np.random.Generator, batch: int = 500_000, max_draws: int | None = None,
         name: str = "sampler") -> tuple[np.ndarray, float]:
    """`n` exact samples of p(x) ∝ s(x) exp(beta Q(x)) for any sampler s of `batch` points (the true
    behaviour, or a learned model's samples): rejection with acceptance exp(beta (Q - 1)), Q in [0, 1].
    With `max_draws`, stops there and returns the fewer samples accepted so far."""
    if beta < 0:
        raise DatasetError(f"beta must be >= 0, got {beta}")

    def accept(x: np.ndarray) -> np.ndarray:
        if beta == 0:  # every draw kept, whatever Q says: the same stream without Q's cost (the toys' argmins)
            return np.ones(len(x))
        qx = q(x)
        if qx.max() > 1 + 1e-12 or qx.min() < -1e-12:
            raise DatasetError(f"{name}: Q left [0, 1] (range {qx.min()}..{qx.max()})")
        return np.exp(beta * (qx - 1.0))

    return reject(sample, accept, n, rng, batch, max_draws)


def reject(sample: Callable[[int], np.ndarray], accept: Callable[[np.ndarray], np.ndarray], n: int,
           rng: np.random.Generator, batch: int = 500_000, max_draws: int | None = None) -> tuple[np.ndarray, float]:
    """`n` exact samples of p(x) ∝ s(x) accept(x), accept in [0, 1] (a tilt, or a likelihood p(y | x)),
    and the acceptance rate observed; with `max_draws`, fewer if that many draws did not suffice."""
    kept, drawn, accepted = [], 0, 0
    while accepted < n and (max_draws is None or drawn < max_draws):
        x = np.asarray(sample(batch))
        keep = rng.uniform(size=len(x)) < accept(x)
        kept.append(x[keep])
        drawn += len(x)
        accepted += int(keep.sum())
    return np.concatenate(kept)[:n], accepted / drawn


def noise_floor(task: ToyTask, beta: float, n: int, repeats: int, seed: int, mmd: bool = True) -> dict[str, float]:
    """Distances between two independent exact samples of size n: what a perfect sampler scores.

    Also the distance from behaviour samples to the target, the score of ignoring guidance. `mmd=False` leaves the
    MMD out (NaN; half the time at n = 2000, and no draw depends on it, so the SWD figures stay the same).
    """
    rng = np.random.default_rng(seed)
    swd, mmds, swd_behaviour, rates = [], [], [], []
    for r in range(repeats):
        a, rate_a = sample_target(task, beta, n, rng)
        b, rate_b = sample_target(task, beta, n, rng)
        mu = task.sample(n, rng)
        swd.append(sliced_wasserstein(a, b, seed=r))
        mmds.append(mmd_rbf(a, b) if mmd else float("nan"))
        swd_behaviour.append(sliced_wasserstein(mu, b, seed=r))
        rates += [rate_a, rate_b]
    return {
        "swd_floor_mean": float(np.mean(swd)),
        "swd_floor_std": float(np.std(swd, ddof=1)) if repeats > 1 else 0.0,
        "mmd_floor_mean": float(np.mean(mmds)),
        "mmd_floor_std": float(np.std(mmds, ddof=1)) if repeats > 1 else 0.0,
        "swd_behaviour_mean": float(np.mean(swd_behaviour)),
        "acceptance_rate": float(np.mean(rates)),
    }
