"""Minari datasets already on disk: official ones (`mujoco/hopper/medium-v0`, `D4RL/pointmaze/umaze-v2`)
and those diffbench generates, read through the same `minari` code path.

Nothing is ever downloaded here: a missing dataset is an error that says where it was looked for.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import minari
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec

from envs.dataset import OfflineDataset
from envs.errors import DatasetError, DatasetNotFoundError
from envs.spaces import flat_box, flat_layout, flatten_batch
from envs.transitions import Episode, Transitions, check_action_bounds

CARD_FILE = "diffbench_card.json"


def datasets_root() -> Path:
    """Where Minari keeps datasets: $MINARI_DATASETS_PATH, else ~/.minari/datasets (Minari's rule)."""
    env = os.environ.get("MINARI_DATASETS_PATH")
    if env is not None and not env.strip():  # Minari would take '' as the path itself and fail obscurely
        raise DatasetError("MINARI_DATASETS_PATH is set but empty: unset it (datasets then live in "
                           "~/.minari/datasets) or set it to a directory")
    return Path(env) if env else Path.home() / ".minari" / "datasets"


@contextmanager
def pinned_root(path: Path) -> Iterator[None]:
    """Point Minari at `path` for the duration: its listing and create APIs read only this variable."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def dataset_dir(dataset_id: str) -> Path:
    return datasets_root() / dataset_id


def open_minari(id_or_dir: str | Path, hint: str) -> minari.MinariDataset:
    """Open by id under the datasets root, or a dataset directory (the one holding `data/`)."""
    path = Path(id_or_dir)
    if path.is_dir():
        data = path / "data" if (path / "data").is_dir() else path
        if not (data / "metadata.json").is_file():
            raise DatasetNotFoundError(f"{path} is not a Minari dataset directory: no data/metadata.json inside it")
        return _read(lambda: minari.MinariDataset(data), str(path))
    where = dataset_dir(str(id_or_dir))
    if not (where / "data").is_dir():
        raise DatasetNotFoundError(
            f"dataset {id_or_dir!r} is not on disk: looked in {where} (datasets root {datasets_root()}, "
            f"set by MINARI_DATASETS_PATH). {hint}"
        )
    return _read(lambda: minari.load_dataset(str(id_or_dir), download=False), str(where))


def _read(open_fn, where: str) -> minari.MinariDataset:
    try:
        return open_fn()
    except DatasetError:
        raise
    except Exception as exc:
        raise DatasetError(f"cannot read the Minari dataset at {where}: {type(exc).__name__}: {exc}") from exc


def read_episodes(ds: minari.MinariDataset, where: str) -> list[Episode]:
    space = ds.observation_space
    episodes = []
    try:
        for ep in ds.iterate_episodes():
            episodes.append(
                Episode(
                    observations=flatten_batch(space, ep.observations),
                    actions=np.asarray(ep.actions).reshape(len(ep.rewards), -1),
                    rewards=np.asarray(ep.rewards),
                    terminations=np.asarray(ep.terminations, dtype=bool),
                    truncations=np.asarray(ep.truncations, dtype=bool),
                )
            )
    except DatasetError:
        raise
    except Exception as exc:
        raise DatasetError(f"cannot read the episodes of {where}: {type(exc).__name__}: {exc}") from exc
    return episodes


def to_offline_dataset(
    ds: minari.MinariDataset,
    episodes: list[Episode],
    location: str,
    action_tolerance: float,
) -> OfflineDataset:
    meta = ds.storage.metadata
    dataset_id = str(meta.get("dataset_id", location))
    transitions = Transitions.from_episodes(episodes, source=dataset_id)
    action_space = ds.action_space
    if not isinstance(action_space, spaces.Box):
        raise DatasetError(f"{dataset_id} acts in a {type(action_space).__name__} space ({action_space}); diffbench's "
                           "algorithms are continuous-control methods and need a Box action space")
    check_action_bounds(transitions.actions, action_space.low, action_space.high, action_tolerance, dataset_id)
    spec, note = _eval_spec(meta)
    return OfflineDataset(
        id=dataset_id,
        source="minari",
        location=location,
        transitions=transitions,
        observation_space=flat_box(ds.observation_space),
        action_space=action_space,
        raw_observation_space=ds.observation_space,
        observation_layout=flat_layout(ds.observation_space),
        ref_min_score=_float_or_none(meta.get("ref_min_score")),
        ref_max_score=_float_or_none(meta.get("ref_max_score")),
        eval_env_spec=spec,
        eval_env_note=note,
        metadata={k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool, type(None)))} | {"card": read_card(location)},
    )


def _eval_spec(meta: dict) -> tuple[EnvSpec | None, str]:
    for key in ("eval_env_spec", "env_spec"):
        raw = meta.get(key)
        if raw:
            try:
                return EnvSpec.from_json(raw), ""
            except Exception as exc:
                return None, f"its {key} cannot be parsed: {exc}"
    return None, "the dataset records no environment spec"


def read_card(location: str | Path) -> dict | None:
    path = Path(location) / CARD_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"dataset card {path} is unreadable: {exc}; regenerate the dataset") from exc


def _float_or_none(x) -> float | None:
    return None if x is None else float(x)
