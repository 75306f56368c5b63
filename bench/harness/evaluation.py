"""Evaluate a policy on its dataset's environment: N episodes at once in a vector env.

One batched `act` call per env step for all N episodes; each env's return is counted until its
first episode ends (the vector env's autoreset is ignored from then on).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from gymnasium import spaces

from envs.dataset import OfflineDataset
from envs.errors import DatasetError
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
    seconds: float
    policy_calls: int

    def summary(self) -> dict:
        out = {"episodes": len(self.returns), "return_mean": float(self.returns.mean()),
               "return_std": float(self.returns.std()), "length_mean": float(self.lengths.mean()),
               "seconds": self.seconds, "policy_calls": self.policy_calls}
        if self.normalized is not None:
            out |= {"score_mean": float(self.normalized.mean()), "score_std": float(self.normalized.std())}
        return out


def evaluate(policy: Algorithm, dataset: OfflineDataset, episodes: int = 10, seed: int = 0,
             max_steps: int | None = None) -> EvalResult:
    """Seeds: env i is reset with seed + i; the policy's sampling noise with `seed`."""
    env = dataset.make_vector_env(episodes)
    try:
        policy.seed(seed)
        obs, _ = env.reset(seed=[seed + i for i in range(episodes)])
        returns = np.zeros(episodes)
        lengths = np.zeros(episodes, dtype=np.int64)
        done = np.zeros(episodes, dtype=bool)
        success = np.zeros(episodes, dtype=bool)
        calls, start = 0, time.perf_counter()
        while not done.all() and (max_steps is None or calls < max_steps):
            actions = policy.act(obs)
            calls += 1
            obs, reward, terminated, truncated, info = env.step(actions)
            live = ~done
            returns[live] += reward[live]
            lengths[live] += 1
            ending = live & (terminated | truncated)
            if ending.any() and "success" in info:  # the task's success at the episode's last step
                success[ending] = np.asarray(info["success"], dtype=bool)[ending]
            done |= terminated | truncated
    finally:
        env.close()
    if dataset.score == "success":
        normalized = 100.0 * success.astype(np.float64)
    elif dataset.ref_min_score is not None and dataset.ref_max_score is not None:
        normalized = dataset.normalized_score(returns)
    else:
        normalized = None
    return EvalResult(returns, lengths, normalized, time.perf_counter() - start, calls)
