"""An offline dataset as training sees it: transitions, spaces, score references and its eval env."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec

from envs.errors import DatasetError
from envs.mujoco_warnings import quiet_mujoco_warnings
from envs.families import CONTINUING_FAMILIES, family
from envs.scores import normalized_score
from envs.transitions import Transitions, transform_rewards


@dataclass(frozen=True)
class OfflineDataset:
    id: str
    source: Literal["minari", "d4rl-hdf5", "ogbench-npz"]
    location: str  # directory or file it was read from
    transitions: Transitions
    observation_space: spaces.Box  # flattened
    action_space: spaces.Box
    raw_observation_space: spaces.Space  # as the env reports it (a Dict for goal-conditioned tasks)
    observation_layout: tuple[tuple[str, int, int], ...]
    ref_min_score: float | None
    ref_max_score: float | None
    eval_env_spec: EnvSpec | None
    eval_env_note: str = ""  # why there is no eval env, or how it differs from the data's
    reward_transform: str = "none"
    metadata: dict[str, Any] = field(default_factory=dict)
    # "normalized_return": D4RL's 100 (R - random) / (expert - random); "success": 100 x the rate of episodes
    # that end in the task's success (OGBench's single-task score)
    score: Literal["normalized_return", "success"] = "normalized_return"

    def normalized_score(self, returns: np.ndarray | float) -> np.ndarray:
        return normalized_score(returns, self.ref_min_score, self.ref_max_score, name=self.id)

    def with_reward_transform(self, kind: str) -> "OfflineDataset":
        if self.reward_transform != "none":
            raise DatasetError(f"{self.id}: rewards are already transformed ({self.reward_transform!r})")
        raw = self.transitions.episode_returns().tolist()  # what the episodes earned on the env, for `data_score`
        return replace(self, transitions=transform_rewards(self.transitions, kind), reward_transform=kind,
                       metadata={**self.metadata, "raw_episode_returns": raw})

    def data_score(self) -> tuple[float, str] | None:
        """The data's own score on the evaluation env, the reference a policy imitating it should reach, and how it
        was measured; None where the data says nothing of it.

        A generated dataset's card may hold it (PointMaze: its noisy collecting controller rolled out on the
        evaluation env, whose episodes differ from the data's goal-to-goal segments). Otherwise, where the data's
        episodes are evaluation episodes (normalised-return families other than the mazes), the mean normalised
        return of its episodes."""
        card = self.metadata.get("card") or {}
        if card.get("data_score") is not None:
            return float(card["data_score"]), str(card.get("data_score_how", "the dataset card's"))
        if (self.score != "normalized_return" or self.ref_min_score is None or self.ref_max_score is None
                or family(self.id) in CONTINUING_FAMILIES + ("antmaze",)):
            return None
        returns = np.asarray(self.metadata.get("raw_episode_returns", self.transitions.episode_returns().tolist()))
        return (float(self.normalized_score(returns).mean()),
                f"the mean normalised return of the data's {len(returns)} episodes")

    def make_env(self, trust: bool = False, **kwargs: Any) -> gym.Env:
        """The evaluation env, emitting observations flattened exactly like the dataset's. `trust`: make it even
        when its entry point is code from outside the packages diffbench installs (`env_entry_point_is_trusted`)."""
        env = _make(self, lambda spec: gym.make(spec, **kwargs), trust)
        return gym.wrappers.FlattenObservation(env) if isinstance(env.observation_space, spaces.Dict) else env

    def make_vector_env(self, num_envs: int, mode: Literal["sync", "async"] = "sync", trust: bool = False
                        ) -> gym.vector.VectorEnv:
        """`num_envs` copies of the evaluation env for batched evaluation (one policy call per step)."""
        if num_envs < 1:
            raise DatasetError(f"num_envs must be at least 1, got {num_envs}")
        wrappers = [gym.wrappers.FlattenObservation] if isinstance(self.raw_observation_space, spaces.Dict) else None
        return _make(self, lambda spec: gym.make_vec(spec, num_envs=num_envs, vectorization_mode=mode, wrappers=wrappers),
                     trust)

    def summary(self) -> dict[str, Any]:
        t = self.transitions
        returns = t.episode_returns().numpy()
        lengths = t.episode_lengths().numpy()
        out: dict[str, Any] = {
            "id": self.id,
            "source": self.source,
            "location": self.location,
            "episodes": t.num_episodes,
            "transitions": len(t),
            "observation_dim": t.obs_dim,
            "action_dim": t.action_dim,
            "observation_layout": [{"key": k or "(box)", "start": a, "stop": b} for k, a, b in self.observation_layout],
            "action_low": self.action_space.low.tolist(),
            "action_high": self.action_space.high.tolist(),
            "terminals": int(t.terminals.sum()),
            "timeouts": int(t.timeouts.sum()),
            "episode_length": _stats(lengths),
            "return": _stats(returns),
            "ref_min_score": self.ref_min_score,
            "ref_max_score": self.ref_max_score,
            "score": self.score,
            "eval_env": self.eval_env_spec.id if self.eval_env_spec else None,
            "eval_max_episode_steps": self.eval_env_spec.max_episode_steps if self.eval_env_spec else None,
        }
        if self.eval_env_note:
            out["eval_env_note"] = self.eval_env_note
        if self.ref_min_score is not None and self.ref_max_score is not None:
            out["return_normalized_mean"] = float(self.normalized_score(returns.mean())) if len(returns) else None
        return out


# their entry points ship with diffbench's dependencies
TRUSTED_ENV_PACKAGES = ("gymnasium", "gymnasium_robotics", "ogbench", "envs")
TRUST_ENV_VARIABLE = "DIFFBENCH_TRUST_ENV"  # "1": make any dataset's env (what `--trust-env` sets)


def env_entry_point_is_trusted(entry_point: Any) -> bool:
    """Whether making an env runs only code diffbench installs (Gymnasium, Gymnasium-Robotics, OGBench, diffbench)."""
    if not isinstance(entry_point, str):
        return False
    return entry_point.split(":")[0].split(".")[0] in TRUSTED_ENV_PACKAGES


def _make(dataset: OfflineDataset, build, trust: bool = False):
    quiet_mujoco_warnings()
    if dataset.eval_env_spec is None:
        raise DatasetError(
            f"{dataset.id}: no evaluation environment is known for this dataset"
            + (f" ({dataset.eval_env_note})" if dataset.eval_env_note else "")
        )
    spec = dataset.eval_env_spec
    # making the env imports and runs the module its spec names: a dataset from elsewhere could run any code
    if not (trust or os.environ.get(TRUST_ENV_VARIABLE) == "1" or env_entry_point_is_trusted(spec.entry_point)):
        raise DatasetError(
            f"{dataset.id}: its evaluation environment's entry point {spec.entry_point!r} is code from outside "
            f"Gymnasium, Gymnasium-Robotics, OGBench and diffbench, and making the env would import and run it; "
            f"if you trust this dataset, pass --trust-env (or set {TRUST_ENV_VARIABLE}=1)")
    try:
        return build(spec)
    except Exception as exc:  # any failure to import or construct the env is the same problem to the user
        raise DatasetError(
            f"{dataset.id}: cannot recover its environment {spec.id!r} (entry point {spec.entry_point!r}): "
            f"{type(exc).__name__}: {exc}. Install the package that provides it, or evaluate on a dataset "
            f"whose environment is available"
        ) from exc


def _stats(x: np.ndarray) -> dict[str, float]:
    if len(x) == 0:
        return {"mean": float("nan"), "std": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"mean": float(np.mean(x)), "std": float(np.std(x)), "min": float(np.min(x)), "max": float(np.max(x))}
