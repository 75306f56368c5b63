"""Kept vector envs give the numbers new ones would: every evaluation resets each env with its own seed."""

import gymnasium as gym
import numpy as np

from bench.harness import env_pool
from bench.harness.evaluation import evaluate


class Noisy:
    """Uniform actions from a stream the evaluation's seed sets: the same seed, the same actions."""

    def __init__(self, low, high):
        self.low, self.high, self.rng, self.seen = low, high, None, []

    def seed(self, seed):
        self.rng, self.seen = np.random.default_rng(seed), []

    def act(self, obs):
        self.seen.append(obs.copy())  # what the envs showed, step by step: the strictest record of their state
        return self.rng.uniform(self.low, self.high, (len(obs), len(self.low))).astype(np.float32)

    def observed(self):
        return np.stack(self.seen)


class Hopper:
    """The part of a dataset evaluation reads, for MuJoCo's hopper (no data needed)."""

    id, score, ref_min_score, ref_max_score = "hopper-medium-v2", "return", None, None
    eval_env_spec = gym.spec("Hopper-v5")
    raw_observation_space = gym.spaces.Box(-np.inf, np.inf, (11,))

    def make_vector_env(self, n):
        return gym.make_vec("Hopper-v5", num_envs=n, vectorization_mode="sync")


def _same_as_new(dataset, low, high, monkeypatch, max_steps):
    pool = env_pool.EnvPool()
    monkeypatch.setattr("bench.harness.evaluation.POOL", pool)
    policy = Noisy(low, high)
    first = evaluate(policy, dataset, episodes=3, seed=5, max_steps=max_steps)
    seen = policy.observed()
    evaluate(policy, dataset, episodes=3, seed=11, max_steps=max_steps // 3)  # other seeds, cut mid-episode
    again = evaluate(policy, dataset, episodes=3, seed=5, max_steps=max_steps)
    assert np.array_equal(policy.observed(), seen)
    assert pool.made == 1, pool.made  # one vector env of 3, kept and reused
    monkeypatch.setattr("bench.harness.evaluation.POOL", env_pool.EnvPool())
    new = evaluate(policy, dataset, episodes=3, seed=5, max_steps=max_steps)
    assert np.array_equal(policy.observed(), seen)
    for res in (again, new):
        assert np.array_equal(res.returns, first.returns) and np.array_equal(res.lengths, first.lengths)
    pool.close()


def test_a_kept_maze_env_scores_as_a_new_one(umaze, monkeypatch):
    _same_as_new(umaze, umaze.action_space.low, umaze.action_space.high, monkeypatch, max_steps=60)


def test_a_kept_mujoco_env_scores_as_a_new_one(monkeypatch):
    _same_as_new(Hopper(), -np.ones(3), np.ones(3), monkeypatch, max_steps=60)


def test_an_env_whose_evaluation_failed_is_closed_and_the_pool_keeps_a_bounded_number(monkeypatch):
    pool = env_pool.EnvPool(keep=2)
    closed = []

    class Env:
        def __init__(self, n):
            self.n = n

        def close(self):
            closed.append(self.n)

    class Data:
        id, eval_env_spec, raw_observation_space = "d", None, None

        def make_vector_env(self, n):
            return Env(n)

    try:
        with pool.borrow(Data(), 1):
            raise RuntimeError("the policy failed")
    except RuntimeError:
        pass
    assert closed == [1] and not pool.idle
    for n in (2, 3, 4):
        with pool.borrow(Data(), n):
            pass
    assert closed == [1, 2] and len(pool.idle) == 2  # the least recently used went first
    with pool.borrow(Data(), 3):
        pass
    assert pool.made == 4  # 3 was kept, not made again
    pool.close()
    assert sorted(closed) == [1, 2, 3, 4]
    few = env_pool.EnvPool(keep=4, keep_envs=5)
    for n in (2, 3, 1):
        with few.borrow(Data(), n):
            pass
    assert [key[-1] for key in few.idle] == [3, 1]  # 6 envs idle is over 5: the oldest vector env went
