import math

import numpy as np
import pytest
import torch

from envs import DatasetError
from envs.toy import TASKS, get_task, mmd_rbf, mode_masses, noise_floor, sample_target, sliced_wasserstein


@pytest.mark.parametrize("name", list(TASKS))
def test_tasks_sample_deterministically_with_q_in_unit_interval(name):
    task = TASKS[name]
    x = task.sample(4000, np.random.default_rng(1))
    assert x.shape == (4000, 2) and np.isfinite(x).all()
    assert np.array_equal(x, task.sample(4000, np.random.default_rng(1)))
    q = task.q(x)
    assert q.shape == (4000,) and q.min() >= 0 and q.max() <= 1
    assert q.std() > 0.1  # the energy separates regions of the behaviour


@pytest.mark.parametrize("beta", [1.0, 3.0])
def test_rejection_sampler_hits_the_exact_tilted_mass(beta):
    # checkerboard: mu is uniform over 8 squares and Q = 1 on 4 of them, so the target puts
    # exactly e^beta / (1 + e^beta) of its mass where Q = 1
    task = TASKS["checkerboard"]
    n = 40_000
    x, rate = sample_target(task, beta, n, np.random.default_rng(0))
    p = np.exp(beta) / (1 + np.exp(beta))
    frac = task.q(x).mean()
    assert abs(frac - p) < 4 * np.sqrt(p * (1 - p) / n)
    assert rate == pytest.approx((1 + np.exp(-beta)) / 2, abs=0.01)  # E[exp(beta (Q - 1))]


@pytest.mark.parametrize("beta", [0.0, 3.0, 10.0])
def test_8gaussians_tilt_weighs_its_modes_by_their_q(beta):
    """Q is the mode's index / 7 and each mode holds 1/8 of mu by symmetry, so the tilt's mode masses are exactly
    softmax(beta i / 7): the ground truth that `mode_masses` reads a sampler's split of its mass against."""
    task = TASKS["8gaussians"]
    n = 40_000
    x, _ = sample_target(task, beta, n, np.random.default_rng(0))
    exact = np.exp(beta * np.arange(8) / 7)
    exact /= exact.sum()
    got = mode_masses(task, x)
    assert got.shape == (8,) and got.sum() == pytest.approx(1.0)
    assert np.abs(got - exact).max() < 4 * np.sqrt(exact.max() / n)
    assert mode_masses(TASKS["moons"], x) is None  # a task without separate modes


def test_rejection_sampler_agrees_with_importance_weighting():
    task = TASKS["8gaussians"]
    rng = np.random.default_rng(2)
    beta = 3.0
    x, _ = sample_target(task, beta, 50_000, rng)
    mu = task.sample(400_000, rng)
    w = np.exp(beta * task.q(mu))
    expected = (mu * w[:, None]).sum(0) / w.sum()
    assert np.allclose(x.mean(0), expected, atol=0.05)


def test_beta_zero_is_the_behaviour_and_negative_beta_is_refused():
    x, rate = sample_target(TASKS["rings"], 0.0, 100, np.random.default_rng(0))
    assert rate == 1.0 and x.shape == (100, 2)
    with pytest.raises(DatasetError, match="beta must be >= 0"):
        sample_target(TASKS["rings"], -1.0, 10, np.random.default_rng(0))
    with pytest.raises(DatasetError, match="unknown toy task 'nope'"):
        get_task("nope")


def test_sliced_wasserstein_of_a_shift():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 2))
    m = np.array([1.0, 0.5])
    # for a translation by m, SW2^2 = E_theta[(theta . m)^2] = |m|^2 / 2 in 2D
    assert sliced_wasserstein(x, x + m, n_projections=1000) == pytest.approx(np.linalg.norm(m) / np.sqrt(2), rel=0.05)
    assert sliced_wasserstein(x, x) == 0.0
    # unequal sizes and torch input
    assert sliced_wasserstein(torch.tensor(x[:5000]), x + m, n_projections=1000) == pytest.approx(np.linalg.norm(m) / np.sqrt(2), rel=0.05)


def test_sliced_wasserstein_sorts_each_projection_as_torch_does():
    """The sort runs on contiguous rows (numpy's on CPU): each column's values are torch's column sort's, to the bit,
    at odd shapes and with ties."""
    from envs.toy.distance import _sorted_columns

    rng = np.random.default_rng(1)
    for shape in ((300, 64), (7, 1), (1, 5)):
        p = torch.as_tensor(rng.normal(size=shape)).T.contiguous().T  # a strided view, as x @ theta's columns are
        p[: shape[0] // 2, 0] = 0.25  # ties
        assert torch.equal(_sorted_columns(p), p.sort(dim=0).values)


def test_mmd_separates_shifted_samples():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2000, 2)), rng.normal(size=(2000, 2))
    same = mmd_rbf(a, b)
    shifted = mmd_rbf(a, b + 0.5)
    assert 0 <= same < shifted / 3


def test_noise_floor_sits_below_the_behaviour_distance():
    stats = noise_floor(TASKS["moons"], 10.0, n=500, repeats=2, seed=0)
    assert 0 < stats["swd_floor_mean"] < stats["swd_behaviour_mean"] / 3
    assert stats["mmd_floor_mean"] > 0
    assert 0.45 < stats["acceptance_rate"] < 0.56
    without = noise_floor(TASKS["moons"], 10.0, n=500, repeats=2, seed=0, mmd=False)  # the flow study's: same draws
    assert math.isnan(without["mmd_floor_mean"]) and without["swd_floor_mean"] == stats["swd_floor_mean"]
