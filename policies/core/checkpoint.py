"""Checkpoints as plain dicts of tensors and primitives, read back with `weights_only=True`.

Every file names the algorithm, the stage and the shapes it was made for, so loading it into
the wrong algorithm or a dataset of another shape fails with a message instead of a shape error
deep inside a network.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from policies.errors import CheckpointError, CorruptCheckpoint

FORMAT = 1


def unique_temporary(path: Path) -> Path:
    """A temporary name beside `path` of this process's own: two drivers on one results directory never
    write the same temporary file."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def probe_write(path: Path) -> None:
    """Write and delete an empty file beside `path`: raises the OSError a later write there would (read-only,
    under a file, a name too long), before any work is spent."""
    probe = unique_temporary(Path(path))
    probe.write_bytes(b"")
    probe.unlink()


def atomic_save(path: Path, obj: Any) -> None:
    """torch.save through a temporary file: a crash mid-write never leaves a truncated file under `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_temporary(path)
    try:
        torch.save(obj, tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(path: Path, *, algorithm: str, stage: str, dims: dict[str, int], payload: dict[str, Any]) -> None:
    atomic_save(path, {"format": FORMAT, "algorithm": algorithm, "stage": stage, "dims": dims, **payload})


def load_partial(path: Path) -> dict[str, Any]:
    """A mid-stage checkpoint written by `policies.core.training.run_steps`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read mid-stage checkpoint {path}: {type(exc).__name__}: {exc}; "
                              "delete it to restart the stage from its beginning") from exc


@contextmanager
def file_lock(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive OS lock on `path` (created if missing; released if the process dies)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def digest_path(path: Path) -> Path:
    return Path(path).with_suffix(".sha256")


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_digest(obj: Any) -> str:
    """A digest of the numbers a stage saved (tensors, arrays and scalars; mappings by sorted key), not of the file:
    two trainings of a stage agree on it exactly when they made the same numbers bit for bit."""
    h = hashlib.sha256()

    def walk(x: Any, where: str) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"{where}:{t.dtype}:{tuple(t.shape)};".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, np.ndarray):
            h.update(f"{where}:{x.dtype}:{x.shape};".encode())
            h.update(np.ascontiguousarray(x).tobytes())
        elif isinstance(x, dict):
            for key in sorted(x, key=str):
                walk(x[key], f"{where}/{key}")
        elif isinstance(x, (list, tuple)):
            for i, item in enumerate(x):
                walk(item, f"{where}/{i}")
        else:
            h.update(f"{where}={x!r};".encode())

    walk(obj, "")
    return h.hexdigest()[:16]


def intact(path: Path) -> bool | None:
    """Whether a shared stage's file still has the digest recorded when it was published (None: none recorded,
    a store from before digests). A run's copy is a hard link to it, so damage to either shows here."""
    recorded = digest_path(path)
    if not recorded.is_file():
        return None
    return file_digest(path) == recorded.read_text().strip()


def quarantine(path: Path) -> Path:
    """Move a damaged shared stage (and its digest) out of the way, kept for inspection; returns where."""
    aside = Path(path).with_name(f"{Path(path).stem}.damaged-{int(time.time())}{Path(path).suffix}")
    Path(path).rename(aside)
    digest_path(path).unlink(missing_ok=True)
    return aside


def publish(src: Path, dst: Path) -> None:
    """Put a copy of `src` at `dst` atomically (a hard link where the filesystem allows one)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_temporary(dst)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            import shutil

            shutil.copyfile(src, tmp)
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path, *, algorithm: str | tuple[str, ...], stage: str, dims: dict[str, int] | None = None,
                    map_location: torch.device | str = "cpu") -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or holding objects we refuse to unpickle
        first = next(iter(str(exc).strip().splitlines()), "")  # torch's unpickling errors run to several lines
        raise CorruptCheckpoint(f"cannot read checkpoint {path}: {type(exc).__name__}: {first.rstrip('.')}. "
                                "It is corrupt or not a diffbench checkpoint; delete it and re-run the stage") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a diffbench checkpoint (format {FORMAT})")
    owners = (algorithm,) if isinstance(algorithm, str) else algorithm
    if ckpt.get("algorithm") not in owners:
        raise CheckpointError(f"{path} is a checkpoint of algorithm {ckpt.get('algorithm')!r}, not {owners[-1]!r}; "
                              f"load it with that algorithm")
    if ckpt.get("stage") != stage:
        raise CheckpointError(f"{path} holds stage {ckpt.get('stage')!r}, expected {stage!r}")
    if dims is not None:
        bad = {k: (ckpt["dims"].get(k), v) for k, v in dims.items() if ckpt["dims"].get(k) != v}
        if bad:
            detail = ", ".join(f"{k}: checkpoint {a}, now {b}" for k, (a, b) in bad.items())
            raise CheckpointError(f"{path} was trained for other shapes ({detail}); use a checkpoint made on this dataset")
    return ckpt
