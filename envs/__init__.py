"""Data in: offline datasets (Minari on disk, legacy D4RL HDF5, generated), toy bandits, env factories.

Nothing here knows about learning; `policies` and `bench` import from here, never the reverse.
"""

import importlib

from envs.errors import DatasetError, DatasetNotFoundError

# loaded on first use (Minari, MuJoCo and torch take seconds to import; `diffbench --help` needs none of them)
_LAZY = {"list_datasets": "envs.catalog", "load_dataset": "envs.catalog", "resolve": "envs.catalog",
         "OfflineDataset": "envs.dataset", "Episode": "envs.transitions", "Transitions": "envs.transitions"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'envs' has no attribute {name!r}")

__all__ = [
    "DatasetError",
    "DatasetNotFoundError",
    "Episode",
    "OfflineDataset",
    "Transitions",
    "list_datasets",
    "load_dataset",
    "resolve",
]
