"""Write a Minari dataset all-or-nothing: build it in a hidden directory, check it, then rename.

Minari's `create_dataset_from_buffers` only writes under $MINARI_DATASETS_PATH and refuses to
overwrite, so the dataset is built under a hidden temporary root inside the datasets root (Minari
skips hidden directories when listing) and moved into place once complete.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import minari
from minari.data_collector import EpisodeBuffer

from envs.checksum import episodes_checksum
from envs.errors import DatasetError
from envs.minari_source import CARD_FILE, datasets_root, pinned_root, read_episodes


def ensure_writable(dataset_id: str, overwrite: bool) -> Path:
    """The dataset's final directory; refuses to replace an existing one unless asked."""
    final = datasets_root() / dataset_id
    if final.exists() and not overwrite:
        raise DatasetError(
            f"dataset {dataset_id!r} already exists at {final}; pass --overwrite to replace it "
            f"(the old copy is kept until the new one is complete)"
        )
    return final


def write_dataset(
    dataset_id: str,
    buffers: list[EpisodeBuffer],
    card: dict[str, Any],
    overwrite: bool = False,
    **create_kwargs: Any,
) -> Path:
    """Create `dataset_id` from episode buffers; returns its directory. The card gains the checksum."""
    root = datasets_root()
    final = ensure_writable(dataset_id, overwrite)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".diffbench-partial-", dir=root))
    try:
        with pinned_root(tmp), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Minari warns about optional metadata
            ds = minari.create_dataset_from_buffers(dataset_id, buffers, **create_kwargs)
            card = dict(card, content_checksum=episodes_checksum(read_episodes(ds, dataset_id)))
        built = tmp / dataset_id
        (built / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
        _copy_namespace_metadata(tmp, root, dataset_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            old = tmp / ".replaced"
            os.rename(final, old)
        os.rename(built, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _copy_namespace_metadata(tmp: Path, root: Path, dataset_id: str) -> None:
    """Minari keeps a namespace_metadata.json per namespace level; add the ones the root lacks."""
    parts = dataset_id.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        rel = Path(*parts[:depth]) / "namespace_metadata.json"
        if (tmp / rel).is_file() and not (root / rel).is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(tmp / rel, root / rel)
