"""Dataset ids and paths, resolved to one loader.

A name is, in order: a path to a D4RL HDF5 file or a Minari dataset directory; a legacy D4RL id
(`hopper-medium-v2`), found in D4RL's download directory; or a Minari id (`mujoco/hopper/medium-v0`,
`D4RL/pointmaze/umaze-v2`, `diffbench/pointmaze/umaze-v0`), found under the Minari datasets root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import minari

from envs import d4rl_hdf5, minari_source, minari_writer, pointmaze
from envs.checksum import episodes_checksum
from envs.dataset import OfflineDataset
from envs.errors import DatasetError
from envs.scores import d4rl_reference_table
from envs.transitions import REWARD_TRANSFORMS, Episode

HDF5_SUFFIXES = (".hdf5", ".h5")


@dataclass(frozen=True)
class DatasetRef:
    name: str
    kind: Literal["hdf5", "minari"]
    target: str  # file path, dataset directory, or Minari id


def resolve(name: str) -> DatasetRef:
    path = Path(name).expanduser()
    if path.suffix in HDF5_SUFFIXES or path.is_file():
        return DatasetRef(name, "hdf5", str(path))
    if path.is_dir():
        return DatasetRef(name, "minari", str(path))
    if name in d4rl_reference_table():
        return DatasetRef(name, "hdf5", str(d4rl_hdf5.find_legacy_file(name)))
    if "/" not in name:
        raise DatasetError(
            f"unknown dataset {name!r}: not a file, a directory, a legacy D4RL id, or a Minari id "
            f"(namespace/name-vN). Known here: {', '.join(known_ids()) or 'none'}"
        )
    return DatasetRef(name, "minari", name)


def fingerprint(name: str) -> str:
    """A cheap identity of a dataset's content, without loading it: the generation card's checksum
    when there is one, else its stored metadata (Minari) or its size and modification time (HDF5).
    Runs are keyed by it, so a dataset regenerated under the same id is never mistaken for the old one."""
    import hashlib
    import json

    try:
        ref = resolve(name)
        if ref.kind == "hdf5":
            st = Path(ref.target).stat()
            blob = f"hdf5:{st.st_size}:{st.st_mtime_ns}"
        else:
            root = Path(ref.target) if Path(ref.target).is_dir() else minari_source.dataset_dir(ref.target)
            card = minari_source.read_card(root)
            if card is not None:
                blob = "card:" + str(card.get("content_checksum"))
            else:
                meta = json.loads((root / "data" / "metadata.json").read_text())
                blob = "minari:" + json.dumps({k: meta.get(k) for k in ("dataset_id", "total_steps", "total_episodes",
                                                                           "minari_version", "data_format")})
    except (DatasetError, OSError, ValueError):
        return "unavailable"  # loading it will say what is wrong
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def load_dataset(name: str, reward_transform: str = "none", action_tolerance: float = 1e-3) -> OfflineDataset:
    """Load any dataset diffbench knows into its in-memory training form; never downloads."""
    if reward_transform not in REWARD_TRANSFORMS:
        raise DatasetError(f"unknown reward transform {reward_transform!r}; choose one of {', '.join(REWARD_TRANSFORMS)}")
    ds, _ = _load(name, action_tolerance)
    return ds if reward_transform == "none" else ds.with_reward_transform(reward_transform)


def _load(name: str, action_tolerance: float) -> tuple[OfflineDataset, list[Episode]]:
    """Read a dataset once; the episodes come back too, for checksums."""
    ref = resolve(name)
    if ref.kind == "hdf5":
        d4rl_id = name if name in d4rl_reference_table() else None
        return d4rl_hdf5.load_hdf5(Path(ref.target), d4rl_id=d4rl_id, action_tolerance=action_tolerance)
    mds = minari_source.open_minari(ref.target, _missing_hint(name))
    where = str(Path(mds.storage.data_path).parent)
    episodes = minari_source.read_episodes(mds, where)
    return minari_source.to_offline_dataset(mds, episodes, where, action_tolerance), episodes


def _missing_hint(name: str) -> str:
    if name in pointmaze.RECIPES:
        return f"Generate it with: diffbench datasets generate {name}"
    return (
        f"diffbench never downloads. On a machine with internet run `minari download {name}` and copy the "
        f"dataset directory here, or generate one of: {', '.join(sorted(pointmaze.RECIPES))}"
    )


def local_minari_ids() -> list[str]:
    root = minari_source.datasets_root()
    if not root.is_dir():
        return []
    with minari_source.pinned_root(root):
        return list(minari.list_local_datasets())


def known_ids() -> list[str]:
    return sorted(set(local_minari_ids()) | set(pointmaze.RECIPES))


def list_datasets() -> list[dict[str, Any]]:
    """Every dataset on disk and every one diffbench can generate, with where it lives."""
    local = set(local_minari_ids())
    rows = [{"id": i, "source": "minari", "on_disk": True, "generatable": i in pointmaze.RECIPES,
             "location": str(minari_source.dataset_dir(i))} for i in sorted(local)]
    rows += [{"id": i, "source": "minari", "on_disk": False, "generatable": True,
              "location": str(minari_source.dataset_dir(i))} for i in sorted(set(pointmaze.RECIPES) - local)]
    d4rl_dir = d4rl_hdf5.d4rl_dir()
    if d4rl_dir.is_dir():
        rows += [{"id": d4rl_hdf5.legacy_id_from_path(p), "source": "d4rl-hdf5", "on_disk": True, "generatable": False,
                  "location": str(p)} for p in sorted(d4rl_dir.glob("*.hdf5"))]
    return rows


def verify(name: str, action_tolerance: float = 1e-3) -> dict[str, Any]:
    """Re-read a dataset, recheck its structure, recompute its checksum, and try its eval env."""
    ds, episodes = _load(name, action_tolerance)  # shapes, dtypes, NaN/inf, bounds, episodes
    checksum = episodes_checksum(episodes)
    card = ds.metadata.get("card") or {}
    expected = card.get("content_checksum")
    checks = {
        "structure": "ok",
        "checksum": checksum,
        "checksum_matches_card": None if expected is None else expected == checksum,
    }
    try:
        env = ds.make_env()
        obs, _ = env.reset(seed=0)
        env.close()
        checks["eval_env"] = "ok" if obs.shape == (ds.transitions.obs_dim,) else f"observes {obs.shape}, data {ds.transitions.obs_dim}"
    except DatasetError as exc:
        checks["eval_env"] = str(exc)
    checks["ok"] = checks["checksum_matches_card"] is not False and checks["eval_env"] == "ok"
    return {"id": ds.id, "location": ds.location, **checks}


def generate(
    dataset_id: str,
    steps: int | None = None,
    seed: int = 0,
    ref_episodes: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Make a generatable dataset and write it as a Minari dataset; nothing is left half-written."""
    minari_writer.ensure_writable(dataset_id, overwrite)  # before collecting, which takes minutes
    kwargs = pointmaze.build(dataset_id, steps=steps, seed=seed, ref_episodes=ref_episodes, progress=progress)
    return minari_writer.write_dataset(dataset_id, overwrite=overwrite, **kwargs)
