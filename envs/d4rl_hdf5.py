"""Legacy D4RL HDF5 files (`observations, actions, rewards, terminals, timeouts`, optional
`next_observations`), as D4RL downloaded them to ~/.d4rl/datasets.
"""

from __future__ import annotations

import os
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec

from envs.dataset import OfflineDataset
from envs.errors import DatasetError, DatasetNotFoundError
from envs.scores import d4rl_reference_table
from envs.transitions import Episode, Transitions, check_action_bounds, check_finite, episodes_from_flat

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")

# Gymnasium envs that reproduce a legacy task's observation and action spaces. D4RL collected the
# locomotion data on mujoco-py's v3 envs; Gymnasium's v5 keeps their spaces (as Minari's
# mujoco/* datasets do), so scores are comparable but not bit-identical.
LEGACY_EVAL_ENVS = {"halfcheetah": "HalfCheetah-v5", "hopper": "Hopper-v5", "walker2d": "Walker2d-v5"}


def d4rl_dir() -> Path:
    """D4RL's own download directory: $D4RL_DATASET_DIR, else ~/.d4rl/datasets."""
    env = os.environ.get("D4RL_DATASET_DIR")
    return Path(env) if env else Path.home() / ".d4rl" / "datasets"


def find_legacy_file(d4rl_id: str) -> Path:
    """D4RL names its files after the id with '_' for '-' in the dataset part, e.g. hopper_medium-v2.hdf5."""
    env, _, rest = d4rl_id.partition("-")
    stem, _, version = rest.rpartition("-")
    candidates = [f"{d4rl_id}.hdf5", f"{env}_{stem.replace('-', '_')}-{version}.hdf5"]
    for name in candidates:
        if (d4rl_dir() / name).is_file():
            return d4rl_dir() / name
    raise DatasetNotFoundError(
        f"legacy D4RL dataset {d4rl_id!r} is not on disk: looked for {', '.join(candidates)} in {d4rl_dir()} "
        f"(set D4RL_DATASET_DIR to change it). Copy the HDF5 file there, pass its path instead of the id, "
        f"or use the dataset's Minari id"
    )


def legacy_id_from_path(path: Path) -> str:
    """hopper_medium-v2.hdf5 -> hopper-medium-v2 (D4RL's own convention)."""
    return path.stem.replace("_", "-")


def load_hdf5(path: Path, d4rl_id: str | None = None, action_tolerance: float = 1e-3) -> tuple[OfflineDataset, list[Episode]]:
    """The dataset and the episodes it was built from (for checksums, without a second read)."""
    if not path.is_file():
        raise DatasetNotFoundError(f"no HDF5 file at {path}")
    arrays = _read_arrays(path)
    dataset_id = d4rl_id or legacy_id_from_path(path)
    where = str(path)
    n = len(arrays["rewards"])
    for key, arr in arrays.items():
        if len(arr) != n:
            lengths = ", ".join(f"{k}={len(v)}" for k, v in arrays.items())
            raise DatasetError(f"{where}: arrays have different lengths ({lengths}); the file is truncated or corrupt")
    check_finite(where, **{k: v for k, v in arrays.items() if k in ("observations", "actions", "rewards", "next_observations")})
    episodes, dropped = episodes_from_flat(
        arrays["observations"], arrays["actions"], arrays["rewards"],
        arrays["terminals"], arrays["timeouts"], arrays.get("next_observations"),
    )
    transitions = Transitions.from_episodes(episodes, source=where)
    obs_dim = transitions.obs_dim
    action_space, spec, note = _legacy_env(dataset_id, obs_dim, transitions.action_dim)
    check_action_bounds(transitions.actions, action_space.low, action_space.high, action_tolerance, where)
    obs_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    refs = d4rl_reference_table().get(dataset_id)
    dataset = OfflineDataset(
        id=dataset_id,
        source="d4rl-hdf5",
        location=str(path),
        transitions=transitions,
        observation_space=obs_space,
        action_space=action_space,
        raw_observation_space=obs_space,
        observation_layout=(("", 0, obs_dim),),
        ref_min_score=refs[0] if refs else None,
        ref_max_score=refs[1] if refs else None,
        eval_env_spec=spec,
        eval_env_note=note,
        metadata={"dropped_steps_without_successor": dropped, "has_next_observations": "next_observations" in arrays},
    )
    return dataset, episodes


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in REQUIRED_KEYS if k not in f]
            if missing:
                raise DatasetError(
                    f"{path}: missing key(s) {', '.join(missing)}; a D4RL file holds "
                    f"{', '.join(REQUIRED_KEYS)} (and optionally next_observations). Found: {', '.join(sorted(f.keys()))}"
                )
            keys = list(REQUIRED_KEYS) + (["next_observations"] if "next_observations" in f else [])
            for k in keys:
                if not isinstance(f[k], h5py.Dataset):
                    raise DatasetError(f"{path}: {k} is an HDF5 {type(f[k]).__name__.lower()}, not an array; a D4RL file "
                                       f"stores each of {', '.join(REQUIRED_KEYS)} as one array (nested "
                                       "observations are a Minari dataset's, load it through Minari)")
            arrays = {k: np.asarray(f[k][()]) for k in keys}
    except DatasetError:
        raise
    except OSError as exc:
        raise DatasetError(f"{path} is not a readable HDF5 file: {exc}") from exc
    for key, arr in arrays.items():
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise DatasetError(f"{path}: {key} holds {arr.dtype} values, not numbers; the file is not a D4RL dataset")
    for key in ("rewards", "terminals", "timeouts"):  # one value per step: (N,) or (N, 1)
        if arrays[key].ndim == 2 and arrays[key].shape[1] == 1:
            arrays[key] = arrays[key][:, 0]
        if arrays[key].ndim != 1:
            raise DatasetError(f"{path}: {key} has shape {arrays[key].shape}; expected one value per step, (N,)")
    if arrays["actions"].ndim == 1:  # one action dimension stored flat, as Minari's path accepts too
        arrays["actions"] = arrays["actions"][:, None]
    for key in ("observations", "actions", "next_observations"):
        if key in arrays and arrays[key].ndim != 2:
            raise DatasetError(f"{path}: {key} has shape {arrays[key].shape}; expected (N, dim)")
    if len(arrays["rewards"]) == 0:
        raise DatasetError(f"{path} holds no transitions (its arrays have zero rows); it is empty or was cut off "
                           "while being written")
    if "next_observations" in arrays and arrays["next_observations"].shape[1:] != arrays["observations"].shape[1:]:
        raise DatasetError(f"{path}: next_observations are {arrays['next_observations'].shape[1]} wide but observations "
                           f"{arrays['observations'].shape[1]}; each must be a state of the same environment")
    return arrays


def _legacy_env(dataset_id: str, obs_dim: int, action_dim: int) -> tuple[spaces.Box, EnvSpec | None, str]:
    family = dataset_id.split("-")[0]
    env_id = LEGACY_EVAL_ENVS.get(family)
    if env_id is None:
        # Every D4RL task acts in [-1, 1]; without an env that is the only bound we know.
        box = spaces.Box(-1.0, 1.0, (action_dim,), np.float32)
        return box, None, f"no Gymnasium env reproduces legacy {family!r} data; evaluate on its Minari version"
    env = gym.make(env_id)
    obs_shape, action_space = env.observation_space.shape, env.action_space
    env.close()
    if action_space.shape != (action_dim,):
        raise DatasetError(f"{dataset_id}: actions have {action_dim} dims but {env_id} takes {action_space.shape[0]}")
    if obs_shape != (obs_dim,):
        return action_space, None, f"{env_id} observes {obs_shape[0]} values, the file {obs_dim}"
    return action_space, gym.spec(env_id), f"evaluated on Gymnasium {env_id}; D4RL collected it on mujoco-py v3"
