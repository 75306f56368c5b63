"""Evaluate a policy on its dataset's environment: N episodes at once in a vector env.

One batched `act` call per env step for all N episodes; each env's return is counted until its
first episode ends (the vector env's autoreset is ignored from then on). A guided algorithm's K guidance
scales are evaluated as one vector env of K x N (`evaluate_scales`): one policy call per step instead of
K, each on K times the rows (results/perf.md times both). The time in `act` is recorded apart from the
env steps' (`policy_seconds`), which bounds what overlapping the two could save.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from gymnasium import spaces

from bench.harness.env_pool import POOL
from envs.dataset import OfflineDataset
from envs.errors import DatasetError
from envs.families import max_vector_envs
from policies.base import Algorithm


EPISODE_CAP = 1000  # steps an evaluation episode may take when its env sets no limit


def check_eval_env(dataset: OfflineDataset) -> int:
    """Make the evaluation env once, before any training is paid for, and check that it acts and observes
    as the data does. Returns the steps an evaluation episode may take (its time limit, else EPISODE_CAP)."""
    env = dataset.make_env()  # a DatasetError naming the env when it cannot be made
    try:
        name = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
        t = dataset.transitions
        if not isinstance(env.action_space, spaces.Box):
            raise DatasetError(f"{dataset.id}: its environment {name} acts in a {type(env.action_space).__name__} "
                               "space; diffbench's algorithms need a continuous (Box) action space")
        if env.action_space.shape != (t.action_dim,):
            raise DatasetError(f"{dataset.id}: the data's actions have {t.action_dim} dims but {name} takes "
                               f"{env.action_space.shape}; the dataset does not belong to this environment")
        if env.observation_space.shape != (t.obs_dim,):
            raise DatasetError(f"{dataset.id}: the data's observations have {t.obs_dim} values but {name} observes "
                               f"{env.observation_space.shape}; the dataset does not belong to this environment")
        limit = env.spec.max_episode_steps if env.spec is not None else None
    finally:
        env.close()
    return int(limit) if limit else EPISODE_CAP


@dataclass
class EvalResult:
    returns: np.ndarray  # (N,)
    lengths: np.ndarray  # (N,)
    normalized: np.ndarray | None  # (N,) the dataset's score: D4RL-normalised return, or 100 x success (OGBench)
    seconds: float  # of a batched evaluation of K blocks, each block's share: 1/K of the whole
    policy_calls: int
    policy_seconds: float = 0.0  # in `act` (same share); the rest of `seconds` stepped the envs
    episodes_per_second: float = 0.0  # of the whole evaluation (all blocks)

    def summary(self) -> dict:
        out = {"episodes": len(self.returns), "return_mean": float(self.returns.mean()),
               "return_std": float(self.returns.std()), "length_mean": float(self.lengths.mean()),
               "seconds": self.seconds, "policy_calls": self.policy_calls, "policy_seconds": self.policy_seconds,
               "episodes_per_second": self.episodes_per_second}
        if self.normalized is not None:
            out |= {"score_mean": float(self.normalized.mean()), "score_std": float(self.normalized.std())}
        return out


class AtScale:
    """A guided algorithm seen through one guidance scale (None: its config's), for `evaluate`."""

    def __init__(self, algo: Algorithm, scale: float | None):
        self.algo, self.scale = algo, scale

    def act(self, observations: np.ndarray) -> np.ndarray:
        return self.algo.act(observations) if self.scale is None else self.algo.act(observations, guidance_scale=self.scale)

    def seed(self, seed: int) -> None:
        self.algo.seed(seed)


def evaluate(policy: Algorithm | AtScale, dataset: OfflineDataset, episodes: int = 10, seed: int = 0,
             max_steps: int | None = None) -> EvalResult:
    """Seeds: env i is reset with seed + i; the policy's sampling noise with `seed`."""
    return evaluate_blocks(policy, policy.act, dataset, 1, episodes, seed, max_steps)[0]


def evaluate_scales(policy: Algorithm, dataset: OfflineDataset, scales: list[float], episodes: int = 10, seed: int = 0,
                    max_steps: int | None = None) -> list[EvalResult]:
    """`evaluate` at each guidance scale, as one evaluation: K x N envs, one `act` call per step for all of them.
    Each scale's episodes see the env seeds and the sampling noise its own `evaluate` would (a guided algorithm's
    `act` with K scales shares the noise across blocks), so the numbers are the same up to float rounding.
    Where K x N envs would be more than the family may run at once (`envs.families.max_vector_envs`), each
    scale is its own `evaluate`."""
    if len(scales) * episodes > max_vector_envs(dataset.id):
        return [evaluate(AtScale(policy, scale), dataset, episodes, seed, max_steps) for scale in scales]
    return evaluate_blocks(policy, lambda obs: policy.act(obs, guidance_scale=scales), dataset, len(scales), episodes,
                           seed, max_steps)


class NonFiniteActions(RuntimeError):
    """A policy's action held NaN or inf: the run is not scored."""


@dataclass
class _Rollout:
    returns: np.ndarray
    lengths: np.ndarray
    success: np.ndarray
    seconds: float
    calls: int
    policy_seconds: float


def _rollout(act, dataset: OfflineDataset, seeds: list[int], max_steps: int | None) -> _Rollout:
    """One vector env of len(seeds) envs, env j reset with seeds[j], until every env's first episode ends."""
    n = len(seeds)
    with POOL.borrow(dataset, n) as env:
        obs, _ = env.reset(seed=seeds)
        returns = np.zeros(n)
        lengths = np.zeros(n, dtype=np.int64)
        done = np.zeros(n, dtype=bool)
        success = np.zeros(n, dtype=bool)
        calls, policy_seconds, start = 0, 0.0, time.perf_counter()
        while not done.all() and (max_steps is None or calls < max_steps):
            t0 = time.perf_counter()
            actions = act(obs)
            policy_seconds += time.perf_counter() - t0
            calls += 1
            if not np.isfinite(actions).all():  # never scored: a simulator would reject them or score them as anything
                raise NonFiniteActions(f"the policy emitted non-finite actions at step {calls} of its evaluation "
                                       f"({int((~np.isfinite(actions)).any(-1).sum())} of {n} envs); the run fails "
                                       "rather than being scored (check its config, e.g. a huge guidance scale)")
            obs, reward, terminated, truncated, info = env.step(actions)
            live = ~done
            returns[live] += reward[live]
            lengths[live] += 1
            ending = live & (terminated | truncated)
            if ending.any() and "success" in info:  # the task's success at the episode's last step
                success[ending] = np.asarray(info["success"], dtype=bool)[ending]
            done |= terminated | truncated
        return _Rollout(returns, lengths, success, time.perf_counter() - start, calls, policy_seconds)


def evaluate_blocks(policy: Algorithm, act, dataset: OfflineDataset, blocks: int, episodes: int, seed: int,
                    max_steps: int | None) -> list[EvalResult]:
    """`blocks` x `episodes` envs, block k's env i reset with seed + i; a block's return counts until its env's
    first episode ends (the vector env's autoreset is ignored from then on). One block of more episodes than
    the family may run at once (`envs.families.max_vector_envs`) runs in waves of that many, the policy's
    noise stream going on from wave to wave."""
    n = blocks * episodes
    seeds = [seed + i for _ in range(blocks) for i in range(episodes)]
    wave = n if blocks > 1 else min(n, max_vector_envs(dataset.id))
    policy.seed(seed)
    parts = [_rollout(act, dataset, seeds[j:j + wave], max_steps) for j in range(0, n, wave)]
    returns, lengths, success = (np.concatenate([getattr(p, k) for p in parts]) for k in ("returns", "lengths", "success"))
    seconds, calls = sum(p.seconds for p in parts), sum(p.calls for p in parts)
    policy_seconds = sum(p.policy_seconds for p in parts)
    if dataset.score == "success":
        normalized = 100.0 * success.astype(np.float64)
    elif dataset.ref_min_score is not None and dataset.ref_max_score is not None:
        normalized = dataset.normalized_score(returns)
    else:
        normalized = None
    rate = n / seconds if seconds > 0 else 0.0
    return [EvalResult(returns[k * episodes:(k + 1) * episodes], lengths[k * episodes:(k + 1) * episodes],
                       normalized[k * episodes:(k + 1) * episodes] if normalized is not None else None,
                       seconds / blocks, calls, policy_seconds / blocks, rate) for k in range(blocks)]
