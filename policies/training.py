"""The one training loop every stage of every algorithm runs: steps, loss checks, progress, history."""

from __future__ import annotations

import math
import time
from typing import Callable

import torch
from tqdm.auto import tqdm

from policies.errors import ConfigError


class DivergedError(RuntimeError):
    """A loss became NaN or infinite: training stops instead of training on."""


def run_steps(step: Callable[[int], torch.Tensor], steps: int, stage: str, *, progress: bool = False,
              log_every: int = 1000) -> dict:
    """Call `step(i)` `steps` times; it returns the (detached) loss. Returns the stage's record.

    Losses are read back to the host only every `log_every` steps (a device sync each time),
    as the mean of the steps since the last read.
    """
    if steps < 0:
        raise ConfigError(f"{stage}: number of steps must be >= 0, got {steps}")
    history: list[tuple[int, float]] = []
    acc, n_acc = None, 0
    start = time.perf_counter()
    bar = tqdm(total=steps, desc=stage, disable=not progress, leave=False)
    for i in range(steps):
        loss = step(i)
        acc = loss if acc is None else acc + loss
        n_acc += 1
        if n_acc == log_every or i == steps - 1:
            value = float(acc) / n_acc
            if not math.isfinite(value):
                bar.close()
                raise DivergedError(f"{stage}: loss became {value} by step {i + 1}; lower the learning rate or check the data")
            history.append((i + 1, value))
            bar.set_postfix(loss=f"{value:.4g}")
            acc, n_acc = None, 0
        bar.update()
    bar.close()
    return {"stage": stage, "steps": steps, "seconds": time.perf_counter() - start,
            "final_loss": history[-1][1] if history else None, "history": history}


def polyak_update(target: torch.nn.Module, online: torch.nn.Module, tau: float) -> None:
    with torch.no_grad():
        for pt, p in zip(target.parameters(), online.parameters()):
            pt.lerp_(p, tau)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {name!r}; use 'auto', 'cpu' or 'cuda[:N]'") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but this torch build sees no CUDA device; use 'cpu' or 'auto'")
    return device


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)
