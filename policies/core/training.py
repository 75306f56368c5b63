"""The one training loop every stage of every algorithm runs: steps, loss checks, progress, history."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union

import torch
from tqdm.auto import tqdm

from policies.core.checkpoint import atomic_save, load_partial
from policies.errors import CheckpointError, ConfigError


class DivergedError(RuntimeError):
    """A loss became NaN or infinite: training stops instead of training on."""


@dataclass
class StageClock:
    """How long the stage in progress has trained so far (its evaluations left out), wall and process CPU
    seconds; `run_steps` sets it before each `on_eval`, so an evaluation can say what its policy cost."""

    stage: str = ""
    seconds: float = 0.0
    cpu_seconds: float = 0.0


@dataclass
class TrainHooks:
    """What the harness asks of a training run besides its result: mid-stage checkpoints and
    evaluations. Neither changes what is learned (a resumed stage continues bit for bit)."""

    checkpoint_every: int = 0  # gradient steps between mid-stage checkpoints; 0: only at stage ends
    eval_every: int = 0  # gradient steps between calls of on_eval; 0: never
    # calls of on_eval per stage, at evenly spaced fractions of its steps (k/curve_points, k < curve_points),
    # so that every stage's learning curve has as many points whatever its budget; 0: none
    curve_points: int = 0
    on_eval: Callable[[str, int], None] | None = None  # (stage, steps done in that stage)
    log: Callable[[str], None] | None = None
    # a directory of stage checkpoints that several algorithms share (one per dataset and reward
    # transform): a stage found there is not trained again; None: every run trains its own stages
    shared_stages: Path | None = None
    clock: StageClock | None = None  # set before each on_eval: the stage's training time so far
    # (stage, steps done, steps, training seconds so far): at the stage's start and at each loss read (every
    # `log_every` steps), for a driver that shows where each running job stands
    on_progress: Callable[[str, int, int, float], None] | None = None

    def evaluates_at(self, done: int, steps: int) -> bool:
        """Whether on_eval runs after `done` of a stage's `steps` (never at its end: the caller evaluates
        the finished stage itself)."""
        if self.on_eval is None or done >= steps:
            return False
        if self.eval_every and done % self.eval_every == 0:
            return True
        return bool(self.curve_points) and done in curve_marks(steps, self.curve_points)


def curve_marks(steps: int, points: int) -> set[int]:
    """The steps k * steps / points (rounded up, k = 1 .. points - 1) at which a stage of `steps` is evaluated."""
    return {-(-k * steps // points) for k in range(1, points)} - {0, steps}


Resumable = Union[torch.nn.Module, torch.optim.Optimizer, torch.Generator]


def _state(obj: Resumable) -> Any:
    return obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()


def _restore(obj: Resumable, state: Any) -> None:
    if isinstance(obj, torch.Generator):
        obj.set_state(state.cpu())  # generator states are CPU byte tensors on every device
    else:
        obj.load_state_dict(state)


def run_steps(step: Callable[[int], torch.Tensor], steps: int, stage: str, *, progress: bool = False,
              log_every: int = 1000, workdir: Path | None = None, state: dict[str, Resumable] | None = None,
              hooks: TrainHooks | None = None, fingerprint: Any = None) -> dict:
    """Call `step(i)` for i in [0, steps); it returns the (detached) loss. Returns the stage's record.

    Losses are read back to the host only every `log_every` steps (a device sync each time), as the
    mean of the steps since the last read. With `workdir` and `hooks.checkpoint_every`, everything in
    `state` (modules, optimizers, generators) is saved every that many steps to
    `<workdir>/<stage>.partial.pt`, and a later call with the same `fingerprint` (the settings the
    stage depends on, JSON-able) picks up from there; the algorithm writes the
    stage's final checkpoint itself, after which the partial one is deleted.
    """
    if steps < 0:
        raise ConfigError(f"{stage}: number of steps must be >= 0, got {steps}")
    hooks = hooks or TrainHooks()
    state = state or {}
    key = stage.split()[0]
    partial = partial_path(workdir, stage) if workdir is not None else None
    history: list[tuple[int, float]] = []
    first, earlier_seconds, earlier_cpu = 0, 0.0, 0.0
    if partial is not None and partial.exists() and hooks.checkpoint_every:
        saved = load_partial(partial)
        if set(saved["state"]) != set(state) or saved["steps"] != steps or saved.get("fingerprint") != fingerprint:
            raise CheckpointError(f"{partial} belongs to another configuration of stage {key}; delete it to restart the stage")
        for name, obj in state.items():
            _restore(obj, saved["state"][name])
        first, earlier_seconds, history = int(saved["step"]), float(saved["seconds"]), [tuple(h) for h in saved["history"]]
        earlier_cpu = float(saved.get("cpu_seconds", earlier_seconds))
        if hooks.log:
            hooks.log(f"{key}: resumed at step {first} of {steps} from {partial.name}")
    acc, n_acc = None, 0
    # training time leaves out the evaluations made between steps (they are the harness's, not the stage's)
    start, cpu_start, eval_wall, eval_cpu = time.perf_counter(), time.process_time(), 0.0, 0.0

    def trained() -> tuple[float, float]:
        return (earlier_seconds + time.perf_counter() - start - eval_wall,
                earlier_cpu + time.process_time() - cpu_start - eval_cpu)
    bar = tqdm(total=steps, initial=first, desc=stage, disable=not progress, leave=False)
    if hooks.on_progress is not None:
        hooks.on_progress(key, first, steps, earlier_seconds)
    for i in range(first, steps):
        loss = step(i)
        acc = loss if acc is None else acc + loss
        n_acc += 1
        done = i + 1
        checkpoint = partial is not None and hooks.checkpoint_every and done % hooks.checkpoint_every == 0 and done < steps
        if n_acc == log_every or done == steps or checkpoint:
            value = float(acc) / n_acc
            if not math.isfinite(value):
                bar.close()
                raise DivergedError(f"{stage}: loss became {value} by step {done}; lower the learning rate or check the data")
            history.append((done, value))
            bar.set_postfix(loss=f"{value:.4g}")
            acc, n_acc = None, 0
            if hooks.on_progress is not None:
                hooks.on_progress(key, done, steps, trained()[0])
        if checkpoint:
            wall, cpu = trained()
            atomic_save(partial, {"step": done, "steps": steps, "history": history, "fingerprint": fingerprint,
                                  "seconds": wall, "cpu_seconds": cpu,
                                  "state": {name: _state(obj) for name, obj in state.items()}})
        if hooks.evaluates_at(done, steps):
            if hooks.clock is not None:
                hooks.clock.stage, (hooks.clock.seconds, hooks.clock.cpu_seconds) = key, trained()
            t0, c0 = time.perf_counter(), time.process_time()
            hooks.on_eval(key, done)
            eval_wall, eval_cpu = eval_wall + time.perf_counter() - t0, eval_cpu + time.process_time() - c0
            for obj in state.values():
                if isinstance(obj, torch.nn.Module):
                    obj.train()
        bar.update()
    bar.close()
    seconds, cpu_seconds = trained()
    if hooks.log and steps > first:
        hooks.log(f"{key}: {steps} steps in {seconds:.0f} s, final loss {history[-1][1]:.4g}")
    return {"stage": stage, "steps": steps, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "final_loss": history[-1][1] if history else None, "history": history, "resumed_at": first,
            "earlier_seconds": earlier_seconds}


def partial_path(workdir: Path, stage: str) -> Path:
    """Where a stage's mid-stage checkpoint lives ("energy (cep)" -> energy.partial.pt)."""
    return Path(workdir) / f"{stage.split()[0]}.partial.pt"


def finish_stage(workdir: Path | None, stage: str) -> None:
    """Drop a stage's mid-stage checkpoint once its final checkpoint is written."""
    if workdir is not None:
        partial_path(workdir, stage).unlink(missing_ok=True)


def optimiser_step(opt: torch.optim.Optimizer, loss: torch.Tensor, max_grad_norm: float = 0.0) -> torch.Tensor:
    """One gradient step on `loss` (its gradient's global norm clipped to `max_grad_norm` when > 0);
    returns the loss detached, for `run_steps`."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], max_grad_norm)
    opt.step()
    return loss.detach()


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


def stage_generator(seed: int, stage: str, device: torch.device) -> torch.Generator:
    """Each stage draws from its own stream, so a run resumed at any stage boundary draws what an
    uninterrupted run would have drawn."""
    import zlib

    import numpy as np

    derived = int(np.random.SeedSequence([seed, zlib.crc32(stage.encode())]).generate_state(1)[0])
    return make_generator(derived, device)
