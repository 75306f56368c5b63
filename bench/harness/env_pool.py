"""Vector envs kept between evaluations in one process.

Making an env can cost more than a short evaluation in it: a PointMaze compiles its maze's MuJoCo model (about
0.1 s an env on a 2-core EPYC), and a run's curve makes its N envs at every point. An evaluation resets every env
with its own seed before the first step, which sets the simulator's state and the env's random stream afresh, so a
kept env gives the numbers a new one would (tests/test_env_pool.py holds both to the same returns). An env whose
evaluation raised is closed, never kept.
"""

from __future__ import annotations

import atexit
from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterator

import gymnasium as gym

from envs.dataset import OfflineDataset

KEEP = 4  # idle vector envs kept at most; the least recently used is closed first
KEEP_ENVS = 256  # and idle envs in all: a family's vector-env limit bounds one evaluation, this the ones kept


def _key(dataset: OfflineDataset, n: int) -> tuple:
    spec = dataset.eval_env_spec
    # the spec's repr holds its id, entry point, kwargs and time limit: two datasets that make the same env share it
    return (repr(spec), type(dataset.raw_observation_space).__name__, n)


class EnvPool:
    def __init__(self, keep: int = KEEP, keep_envs: int = KEEP_ENVS):
        self.keep, self.keep_envs, self.idle, self.made = keep, keep_envs, OrderedDict(), 0

    @contextmanager
    def borrow(self, dataset: OfflineDataset, n: int) -> Iterator[gym.vector.VectorEnv]:
        """`n` copies of `dataset`'s evaluation env: a kept one if this process made one before, else a new one.
        The caller resets it with its seeds before stepping it."""
        key = _key(dataset, n)
        env = self.idle.pop(key, None)
        if env is None:
            env = dataset.make_vector_env(n)
            self.made += 1
        try:
            yield env
        except BaseException:
            env.close()
            raise
        self.idle[key] = env
        while len(self.idle) > self.keep or sum(k[-1] for k in self.idle) > self.keep_envs:
            self.idle.popitem(last=False)[1].close()

    def close(self) -> None:
        while self.idle:
            self.idle.popitem()[1].close()


POOL = EnvPool()
atexit.register(POOL.close)
