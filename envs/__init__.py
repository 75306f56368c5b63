"""Data in: offline datasets (Minari on disk, legacy D4RL HDF5, generated), toy bandits, env factories.

Nothing here knows about learning; `policies` and `bench` import from here, never the reverse.
"""

from envs.catalog import list_datasets, load_dataset, resolve
from envs.dataset import OfflineDataset
from envs.errors import DatasetError, DatasetNotFoundError
from envs.transitions import Episode, Transitions

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
