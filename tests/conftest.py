import os
import shutil
from pathlib import Path

import pytest

# Mish runs eager in tests: fusing it costs a compile (5-25 s) per process and changes values by rounding only;
# tests/test_networks_mish.py checks the fused kernel against the eager one.
os.environ.setdefault("DIFFBENCH_COMPILE", "0")
# Datasets are generated in this process with the CPU's own kernels: a pinned child per dataset costs seconds of
# imports each; tests/test_numerics.py checks the pinned path itself.
os.environ.setdefault("DIFFBENCH_NUMERICS", "native")

if os.environ.get("PYTEST_XDIST_WORKER"):  # one of `pytest -n N`'s workers: one thread each, or N workers fight for cores
    import torch

    torch.set_num_threads(1)

TINY_ID = "diffbench/pointmaze/umaze-small-v0"
TINY_STEPS = 1500


@pytest.fixture(scope="session")
def session_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("minari")


@pytest.fixture(autouse=True)
def isolated_data_dirs(session_root, tmp_path, monkeypatch):
    """No test reads or writes the user's ~/.minari, ~/.d4rl or ~/.cache."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(session_root))
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def tiny_pointmaze(session_root) -> str:
    """A small generated PointMaze dataset, written through Minari like an official one."""
    from envs.catalog import generate
    from envs.minari_source import pinned_root

    with pinned_root(session_root):
        generate(TINY_ID, steps=TINY_STEPS, seed=0, ref_episodes=2, progress=False)
    return TINY_ID


@pytest.fixture
def dataset_copy(tiny_pointmaze, session_root, tmp_path) -> Path:
    """A private copy of the tiny dataset's directory, safe to corrupt."""
    dst = tmp_path / "copy"
    shutil.copytree(session_root / tiny_pointmaze, dst)
    return dst


@pytest.fixture(scope="module")
def umaze(tiny_pointmaze, session_root):
    """The tiny dataset loaded once per module."""
    from envs.catalog import load_dataset
    from envs.minari_source import pinned_root

    with pinned_root(session_root):
        return load_dataset(tiny_pointmaze)
