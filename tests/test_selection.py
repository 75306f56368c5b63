"""Candidate selection (SfBC, IDQL, Diffusion-QL) against ground truth on a toy bandit: with the exact
behaviour sampler and the exact Q, picking by exp(beta Q) among N candidates draws from the exact tilted
target mu exp(beta Q) (as close as an exact sample is); at temperature 0 it draws from mu itself; and the
picks' Q rises with the temperature up to the best candidate's."""

import numpy as np
import pytest
import torch

from envs.toy.distance import sliced_wasserstein
from envs.toy.target import noise_floor, sample_target
from envs.toy.tasks import get_task
from policies.core.selection import select
from policies.errors import ConfigError

BETA, STATES, N = 3.0, 4000, 64


def bandit(seed: int = 0):
    """(STATES, N, 2) exact behaviour candidates of the 8-gaussians bandit and their exact Q."""
    task, rng = get_task("8gaussians"), np.random.default_rng(seed)
    x = task.sample(STATES * N, rng)
    return task, torch.as_tensor(x, dtype=torch.float32).view(STATES, N, 2), torch.as_tensor(task.q(x), dtype=torch.float32).view(STATES, N)


def test_softmax_selection_draws_the_exact_tilted_target():
    """SW2 between samples of this target varies a lot from draw to draw, so distances are averaged over
    several exact samples and compared with the floor's mean and spread (`noise_floor`)."""
    task, cands, q = bandit()
    picked = select(cands, q, "softmax", BETA, generator=torch.Generator().manual_seed(0)).numpy()
    rng = np.random.default_rng(1)
    distance = np.mean([sliced_wasserstein(picked, sample_target(task, BETA, STATES, rng)[0], seed=r) for r in range(5)])
    floor = noise_floor(task, BETA, STATES, repeats=5, seed=2, mmd=False)
    assert distance < floor["swd_floor_mean"] + 3 * floor["swd_floor_std"] < floor["swd_behaviour_mean"] / 2


def test_temperature_zero_draws_the_behaviour_and_a_rising_temperature_raises_q():
    task, cands, q = bandit()
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(2)
    floor = [sliced_wasserstein(task.sample(STATES, rng), task.sample(STATES, rng), seed=r) for r in range(5)]
    uniform = select(cands, q, "softmax", 0.0, generator=g).numpy()
    distance = np.mean([sliced_wasserstein(uniform, task.sample(STATES, rng), seed=r) for r in range(5)])
    assert distance < np.mean(floor) + 3 * np.std(floor, ddof=1)
    picked_q = [float(torch.as_tensor(task.q(select(cands, q, "softmax", beta, generator=g).numpy())).mean())
                for beta in (0.0, 1.0, 3.0, 10.0, 100.0)]
    assert all(a < b for a, b in zip(picked_q, picked_q[1:]))
    best = float(q.max(1).values.mean())
    greedy = float(torch.as_tensor(task.q(select(cands, q, "greedy").numpy())).mean())
    assert greedy == pytest.approx(best, abs=1e-6) and picked_q[-1] == pytest.approx(best, abs=0.01)


def test_keep_averages_distinct_candidates_and_the_expectile_rule_weighs_by_the_advantage_sign():
    cands = torch.arange(6.0).view(1, 6, 1).expand(5000, 6, 1)
    scores = torch.zeros(5000, 6)
    # keep = all candidates without replacement: the mean of all of them, whatever the draw
    assert torch.allclose(select(cands, scores, "softmax", 1.0, keep=6), torch.full((5000, 1), 2.5))
    # tau = 0.9 with advantages + + - - - -: the two positive ones carry 0.9 / (0.9 * 2 + 0.1 * 4) of the mass each
    adv = torch.tensor([1.0, 2.0, -1.0, -2.0, -3.0, -0.5]).expand(5000, 6)
    picked = select(cands, adv, "expectile", 0.9, generator=torch.Generator().manual_seed(0)).squeeze(1)
    share = float(((picked == 0) | (picked == 1)).float().mean())
    assert share == pytest.approx(1.8 / 2.2, abs=0.02)


@pytest.mark.parametrize("kwargs,match", [({"rule": "best"}, "unknown selection rule"), ({"keep": 7}, "keep"),
                                          ({"rule": "expectile", "temperature": 1.0}, "tau in")])
def test_bad_selection_settings_are_one_clear_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        select(torch.zeros(2, 6, 1), torch.zeros(2, 6), **{"rule": "softmax", "temperature": 1.0, **kwargs})
