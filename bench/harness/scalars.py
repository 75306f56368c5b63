"""TensorBoard scalars for a run, written only when TensorBoard is installed (`diffbench[tensorboard]`).

Everything written here is also in the results store and `metrics.jsonl`; TensorBoard is a live
view of a long sweep, not a record, so a missing install is silent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class Scalars:
    def __init__(self, logdir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch raises this when the tensorboard package is absent
            self.writer = None
        else:
            self.writer = SummaryWriter(str(logdir))

    def add(self, tag: str, value: float | None, step: int) -> None:
        if self.writer is not None and value is not None:
            self.writer.add_scalar(tag, float(value), int(step))

    def add_stage_losses(self, stages: dict[str, dict[str, Any]]) -> None:
        """Each stage's logged loss history, x axis its own steps."""
        for name, record in stages.items():
            for step, loss in record.get("history", []):
                self.add(f"loss/{name}", loss, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
