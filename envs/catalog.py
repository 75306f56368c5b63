"""Dataset ids and paths, resolved to one loader.

A name is, in order: a path to a D4RL HDF5 file or a Minari dataset directory; a legacy D4RL id
(`hopper-medium-v2`), found in D4RL's download directory; or a Minari id (`mujoco/hopper/medium-v0`,
`D4RL/pointmaze/umaze-v2`, `diffbench/pointmaze/umaze-v0`), found under the Minari datasets root.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import minari

from envs import d4rl_hdf5, families, minari_source, minari_writer, numerics, pointmaze
from envs.locomotion import recipes as locomotion
from envs.ogbench import play as ogbench_play, singletask
from envs.checksum import episodes_checksum
from envs.dataset import OfflineDataset, env_entry_point_is_trusted
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
    """An identity of a dataset's content, without loading it: the generation card's checksum when there
    is one, else a hash of the bytes of its data file (cached by path, size and modification time, so
    it is read once). Runs are keyed by it: a dataset regenerated under the same id is never mistaken
    for the old one, and a copied or touched file is still the same dataset. An OGBench single-task view is
    its play data's identity with the view's env and task (the view is computed when loaded, never stored)."""
    task = singletask.parse(name)
    if task is not None:
        base, env, number = task
        try:
            inner = (fingerprint(base) if base.startswith("diffbench/")
                     else "npz:" + file_digest(singletask.official_dir() / f"{base}.npz"))
        except OSError:
            return "unavailable"
        if inner == "unavailable":
            return inner
        return hashlib.sha256(f"view:{inner}:{env}:{number}".encode()).hexdigest()[:12]
    try:
        ref = resolve(name)
        if ref.kind == "hdf5":
            blob = "hdf5:" + file_digest(Path(ref.target))
        else:
            root = Path(ref.target) if Path(ref.target).is_dir() else minari_source.dataset_dir(ref.target)
            data = root / "data" if (root / "data").is_dir() else root
            card = minari_source.read_card(root)
            if card is not None:
                blob = "card:" + str(card.get("content_checksum"))
            else:
                files = sorted(data.glob("*.hdf5"))
                if not files:  # not on disk (or not a dataset): no content to name
                    return "unavailable"
                blob = "minari:" + "".join(file_digest(p) for p in files)
    except (DatasetError, OSError, ValueError):
        return "unavailable"  # loading it will say what is wrong
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "diffbench" / "file_digests.json"


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, remembered under (resolved path, size, mtime) in the user's cache."""
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}:{st.st_size}:{st.st_mtime_ns}"
    cache_path = _cache_file()
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    cache[key] = h.hexdigest()
    try:  # a cache that cannot be written only costs a re-read next time
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_name(f".{cache_path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        tmp.replace(cache_path)
    except OSError:
        pass
    return cache[key]


def card_of(name: str) -> dict | None:
    """The generation card of a Minari dataset diffbench made, without loading the data; else None."""
    try:
        ref = resolve(name)
        if ref.kind != "minari":
            return None
        root = Path(ref.target) if Path(ref.target).is_dir() else minari_source.dataset_dir(ref.target)
        return minari_source.read_card(root)
    except (DatasetError, OSError):
        return None


def default_reward_transform(name: str) -> str:
    """The reward transform a run on `name` applies unless told otherwise (see `envs.families`)."""
    return families.default_reward_transform(name, card_of(name))


def load_dataset(name: str, reward_transform: str = "none", action_tolerance: float = 1e-3) -> OfflineDataset:
    """Load any dataset diffbench knows into its in-memory training form; never downloads."""
    if reward_transform not in REWARD_TRANSFORMS:
        raise DatasetError(f"unknown reward transform {reward_transform!r}; choose one of {', '.join(REWARD_TRANSFORMS)}")
    ds, _ = _load(name, action_tolerance)
    return ds if reward_transform == "none" else ds.with_reward_transform(reward_transform)


def _load(name: str, action_tolerance: float) -> tuple[OfflineDataset, list[Episode]]:
    """Read a dataset once; the episodes come back too, for checksums."""
    task = singletask.parse(name)
    if task is not None:
        return _load_singletask(name, *task, action_tolerance)
    ref = resolve(name)
    if ref.kind == "hdf5":
        d4rl_id = name if name in d4rl_reference_table() else None
        return d4rl_hdf5.load_hdf5(Path(ref.target), d4rl_id=d4rl_id, action_tolerance=action_tolerance)
    mds = minari_source.open_minari(ref.target, _missing_hint(name))
    where = str(Path(mds.storage.data_path).parent)
    episodes = minari_source.read_episodes(mds, where)
    return minari_source.to_offline_dataset(mds, episodes, where, action_tolerance), episodes


def generatable() -> list[str]:
    """Every id a recipe here makes: PointMaze, OGBench play data, and locomotion where its env's SAC actors
    are committed."""
    committed = {env for env in locomotion.ENVS if (locomotion.policies_dir(env) / "index.json").is_file()}
    return sorted(set(pointmaze.RECIPES) | set(ogbench_play.RECIPES)
                  | {i for i, r in locomotion.RECIPES.items() if r.env in committed})


def _load_singletask(name: str, base: str, env: str, task: int | None, action_tolerance: float
                     ) -> tuple[OfflineDataset, list[Episode]]:
    """OGBench single-task view: of play data made here (a diffbench/ogbench id), or of OGBench's own file."""
    if not base.startswith("diffbench/"):
        return singletask.load_official(name, env, task, base), []
    mds = minari_source.open_minari(base, _missing_hint(base))
    where = str(Path(mds.storage.data_path).parent)
    episodes = minari_source.read_episodes(mds, where)
    ds = minari_source.to_offline_dataset(mds, episodes, where, action_tolerance)
    return singletask.view(ds, singletask.episode_states(mds, where), name, env, task), episodes


def missing_generatable(names: list[str]) -> list[str]:
    """The datasets diffbench makes that `names` need (an OGBench single-task view needs its play data) and that are
    not on disk, in order, each once: what one `diffbench datasets generate` call would make."""
    makes, out = set(generatable()), []
    for name in names:
        task = singletask.parse(name)
        base = task[0] if task is not None else name
        if base in makes and base not in out and not (minari_source.dataset_dir(base) / "data").is_dir():
            out.append(base)
    return out


def _missing_hint(name: str) -> str:
    if name in generatable():
        return f"Generate it with: diffbench datasets generate {name}"
    return (
        f"diffbench never downloads. On a machine with internet run `minari download {name}` and copy the "
        f"dataset directory here, or generate one of: {', '.join(generatable())}"
    )


def local_minari_ids() -> list[str]:
    root = minari_source.datasets_root()
    if not root.is_dir():
        return []
    with minari_source.pinned_root(root):
        return list(minari.list_local_datasets())


def known_ids() -> list[str]:
    return sorted(set(local_minari_ids()) | set(generatable()))


def same_bytes_on(dataset_id: str) -> str | None:
    """Where a recipe's bytes are the same: "x86-64-v3" (any such CPU, generation pinned), "one CPU vendor" (a
    locomotion recipe whose actor acts in torch, whose kernels differ between Intel and AMD), None (not made here)."""
    if dataset_id in locomotion.RECIPES:
        return "one CPU vendor" if locomotion.RECIPES[dataset_id].actor_math == "torch" else "x86-64-v3"
    return "x86-64-v3" if dataset_id in pointmaze.RECIPES or dataset_id in ogbench_play.RECIPES else None


def list_datasets() -> list[dict[str, Any]]:
    """Every dataset on disk and every one diffbench can generate, with where it lives and, for a generated one,
    on which machines it comes out as the same bytes."""
    local = set(local_minari_ids())
    makes = set(generatable())
    rows = [{"id": i, "source": "minari", "on_disk": True, "generatable": i in makes,
             "same_bytes_on": same_bytes_on(i) if i in makes else None,
             "location": str(minari_source.dataset_dir(i))} for i in sorted(local)]
    rows += [{"id": i, "source": "minari", "on_disk": False, "generatable": True, "same_bytes_on": same_bytes_on(i),
              "location": str(minari_source.dataset_dir(i))} for i in sorted(makes - local)]
    # OGBench play data on disk (ours, or OGBench's own files) run as single-task views: list them too
    bases = [(i, str(minari_source.dataset_dir(i))) for i in sorted(local) if i in ogbench_play.RECIPES]
    og_dir = singletask.official_dir()
    if og_dir.is_dir():
        bases += [(p.stem, str(p)) for p in sorted(og_dir.glob("*-play-v0.npz"))
                  if singletask.parse(f"{p.stem[:-3]}-singletask-v0")]
    rows += [{"id": f"{base[:-3]}-singletask{'' if task is None else f'-task{task}'}-v0", "source": "view",
              "on_disk": True, "generatable": False, "location": where}
             for base, where in bases for task in singletask.TASKS]
    d4rl_dir = d4rl_hdf5.d4rl_dir()
    if d4rl_dir.is_dir():
        rows += [{"id": d4rl_hdf5.legacy_id_from_path(p), "source": "d4rl-hdf5", "on_disk": True, "generatable": False,
                  "location": str(p)} for p in sorted(d4rl_dir.glob("*.hdf5"))]
    return rows


ENV_CHECKS = ("trusted", "always", "never")


def verify(name: str, action_tolerance: float = 1e-3, make_env: str = "trusted") -> dict[str, Any]:
    """Re-read a dataset, recheck its structure, recompute its checksum, and try its eval env.

    Making the env imports and runs the module its spec names, so a dataset from elsewhere could run any
    code: by default ("trusted") only envs from Gymnasium, Gymnasium-Robotics and diffbench are made;
    "always" makes any (the user vouches for it), "never" none."""
    if make_env not in ENV_CHECKS:
        raise DatasetError(f"make_env must be one of {', '.join(ENV_CHECKS)}, got {make_env!r}")
    ds, episodes = _load(name, action_tolerance)  # shapes, dtypes, NaN/inf, bounds, episodes
    checksum = episodes_checksum(episodes)
    card = ds.metadata.get("card") or {}
    expected = card.get("content_checksum")
    checks: dict[str, Any] = {
        "structure": "ok",
        "checksum": checksum,
        "checksum_matches_card": None if expected is None else expected == checksum,
        "fingerprint": fingerprint(name),  # the content identity runs record (and their run ids hash)
        "generated_on": card.get("generated_on", "not recorded"),
        "numerics": _numerics_text(card.get("numerics")),
    }
    if str(card.get("generator", "")).startswith("envs.locomotion"):  # cards before the field acted in torch
        checks["actor_math"] = (card.get("recipe") or {}).get("actor_math", "torch")
    entry = ds.eval_env_spec.entry_point if ds.eval_env_spec is not None else None
    if make_env == "never":
        checks["eval_env"] = "not checked (asked not to make it)"
    elif make_env == "trusted" and entry is not None and not env_entry_point_is_trusted(entry):
        checks["eval_env"] = (f"not checked: its entry point {entry!r} is code from outside Gymnasium and diffbench, "
                              "and making the env would import and run it; pass --make-env to do so")
    else:
        try:
            env = ds.make_env(trust=make_env == "always")
            obs, _ = env.reset(seed=0)
            env.close()
            checks["eval_env"] = "ok" if obs.shape == (ds.transitions.obs_dim,) else f"observes {obs.shape}, data {ds.transitions.obs_dim}"
        except DatasetError as exc:
            checks["eval_env"] = str(exc)
    env_ok = checks["eval_env"] == "ok" or checks["eval_env"].startswith("not checked")
    checks["ok"] = checks["checksum_matches_card"] is not False and env_ok
    return {"id": ds.id, "location": ds.location, **checks}


def _numerics_text(recorded: dict[str, Any] | None) -> str:
    if not recorded:
        return "not recorded (made before diffbench pinned numpy's and OpenBLAS's kernels, or not generated here)"
    how = "pinned" if recorded.get("pinned") else "native (not pinned)"
    return f"{how}: numpy at {recorded.get('numpy_dispatch')}, OpenBLAS {recorded.get('openblas_coretype')}"


# The versions of the packages that decide a generated dataset's bytes (the simulator, the envs' code), as the
# committed results were made under (pyproject pins mujoco to the same). Generated under others, a dataset may hold
# other bytes: its card records its own versions and the mismatch, its runs record its content, and reports keep
# runs on different contents apart.
GENERATION_PINS = {"mujoco": "4.0.1", "gymnasium": "1.4.0", "gymnasium-robotics": "1.4.2", "minari": "0.5.4"}


def version_mismatches() -> dict[str, str]:
    """package -> "installed (pinned X)" for each package in GENERATION_PINS installed at another version."""
    out = {}
    for package, pinned in GENERATION_PINS.items():
        try:
            installed = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            installed = "absent"
        if installed != pinned:
            out[package] = f"{installed} (pinned {pinned})"
    return out


def generate(
    dataset_id: str,
    steps: int | None = None,
    seed: int = 0,
    ref_episodes: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    policies: Path | None = None,
) -> Path:
    """Make a generatable dataset and write it as a Minari dataset; nothing is left half-written.
    `policies`: locomotion only, a directory of actors to use instead of the committed ones. Made under pinned
    numeric kernels (`envs.numerics`), in a child process when this one did not start under them."""
    minari_writer.ensure_writable(dataset_id, overwrite)  # before collecting, which takes minutes
    settings = {"dataset_id": dataset_id, "steps": steps, "seed": seed, "ref_episodes": ref_episodes,
                "overwrite": overwrite, "progress": progress, "policies": None if policies is None else str(policies)}
    if numerics.applies() and not numerics.is_pinned():
        return Path(numerics.run_pinned("envs.catalog:_generate_here", settings))
    return Path(_generate_here(**settings))


def _generate_here(dataset_id: str, steps: int | None, seed: int, ref_episodes: int | None, overwrite: bool,
                   progress: bool, policies: str | None) -> str:
    began = time.perf_counter()
    if dataset_id in ogbench_play.RECIPES:
        if ref_episodes is not None:
            raise DatasetError("--ref-episodes is for PointMaze; OGBench's single-task score is the success rate")
        kwargs = ogbench_play.build(dataset_id, episodes=None if steps is None else -(-steps // 1000), seed=seed,
                                    progress=progress)
    elif dataset_id in locomotion.RECIPES:
        if ref_episodes is not None:
            raise DatasetError("--ref-episodes is for PointMaze; locomotion datasets use D4RL's reference returns")
        kwargs = locomotion.build(dataset_id, steps=steps, seed=seed, progress=progress,
                                  root=None if policies is None else Path(policies))
    else:
        kwargs = pointmaze.build(dataset_id, steps=steps, seed=seed, ref_episodes=ref_episodes, progress=progress)
    kwargs["card"] = kwargs["card"] | {"generation_seconds": round(time.perf_counter() - began, 1),
                                       "generation_cores": os.cpu_count(), "pinned_versions": GENERATION_PINS,
                                       "versions_off_pin": version_mismatches(),
                                       "generated_on": numerics.cpu_model(), "numerics": numerics.state()}
    return str(minari_writer.write_dataset(dataset_id, overwrite=overwrite, **kwargs))
