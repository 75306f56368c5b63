"""Several drivers on one results directory: a lock per run directory and writes that never tear.

Two `diffbench sweep` processes given the same runs must not train one run twice at once, nor
leave a half-written file where the other reads: the first takes the run directory's lock, the
second waits for it and then finds the run finished (its `result.json`) instead of redoing it.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from policies.core.checkpoint import file_lock, unique_temporary

LOCK_FILE = ".lock"


@contextmanager
def run_lock(workdir: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `workdir` (an OS file lock, released if the process dies)."""
    with file_lock(Path(workdir) / LOCK_FILE, on_wait):
        yield


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = unique_temporary(path)
    try:
        tmp.write_text(text)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
