"""Training-step time of the algorithms whose networks use Mish (Diffusion-QL, DAC, IDQL's behaviour model)
with the fused (torch.compile) Mish beside the eager one, in one run on one machine, the two taken in turn
(`diffbench perf kernels`): what fusing buys a sweep's most expensive runs. Each is built at a preset
(cpu by default) on random transitions of Walker2d's shapes; a step costs the same whatever the data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from bench.harness.provenance import code_version, made_by
from bench.studies.perf import _time_interleaved, device_label
from envs.transitions import Transitions
from policies import registry
from policies.core.networks import eager_mish, mish_kernels
from policies.errors import ConfigError

# algorithm -> (its method that trains the Mish network on transitions, the config field of that stage's steps)
TRAINERS = {"diffusion_ql": ("train", "steps"), "dac": ("train", "steps"),
            "idql": ("train_behaviour", "behaviour_steps")}
ALGORITHMS = tuple(TRAINERS)
SHAPE = (17, 6)  # Walker2d's observation and action sizes


def random_transitions(n: int, device: str, seed: int = 0) -> Transitions:
    g = torch.Generator().manual_seed(seed)
    obs_dim, act_dim = SHAPE
    obs = torch.randn(n, obs_dim, generator=g)
    return Transitions(observations=obs, actions=torch.rand(n, act_dim, generator=g) * 2 - 1,
                       rewards=torch.randn(n, generator=g), next_observations=obs.roll(-1, 0),
                       terminals=torch.zeros(n), timeouts=torch.zeros(n),
                       episode_starts=torch.tensor([0, n])).to(device)


def steps_call(name: str, preset: str, device: str, steps: int, t: Transitions,
               trainer: tuple[str, str] | None = None):
    """A call that trains `name`'s Mish network (built afresh at `preset`, seed 0) for `steps` gradient steps;
    `trainer`: (the method, its steps field) for another stage than TRAINERS names."""
    method, field = trainer or TRAINERS[name]
    cls = registry.get(name)
    config = registry.make_config(name, preset, {"device": device})
    config = dataclasses.replace(config, **{field: steps})
    obs_dim, act_dim = SHAPE

    def call():
        algo = cls(config, obs_dim, act_dim, -np.ones(act_dim, np.float32), np.ones(act_dim, np.float32))
        algo.seed(0)
        getattr(algo, method)(t, None, None, False)
        return algo
    return call


def measure(algorithms: tuple[str, ...] = ALGORITHMS, preset: str = "cpu", device: str = "cpu", steps: int = 20,
            repeats: int = 5) -> list[dict]:
    """Per algorithm: seconds per training step eager and fused (medians over `repeats` calls of `steps` steps,
    the calls in turn), and which kernel the fused calls got (eager where compiling failed). Every name is checked
    before anything is timed."""
    for name in algorithms:
        registry.get(name)  # an unknown name: the registry's one clear error
        if name not in TRAINERS:
            raise ConfigError(f"perf kernels: {name!r} has no Mish network to time; choose from {', '.join(TRAINERS)}")
    t = random_transitions(10_000, device)
    rows = []
    for name in algorithms:
        fused = steps_call(name, preset, device, steps, t)

        def eager(fn=fused) -> None:
            with eager_mish():
                fn()
        e, f = _time_interleaved([eager, fused], torch.device(device), repeats, warmup=1)
        rows.append({"algorithm": name, "preset": preset, "steps_per_call": steps, "eager_ms": 1e3 * e / steps,
                     "fused_ms": 1e3 * f / steps, "speedup": e / f, "kernel": mish_kernels()[1].get(
                         torch.device(device).type, "eager"), "device": device_label(device)})
    return rows


def write_report(rows: list[dict], out: Path, command: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# Training steps with the fused Mish beside the eager one, one run", "",
             made_by(command, None, code_version(), ("torch",)), "",
             f"Each algorithm at its `{rows[0]['preset']}` preset's networks and batch, Walker2d's shapes, float32, "
             f"on {rows[0]['device']}; a call trains a fresh copy for {rows[0]['steps_per_call']} "
             "steps (so the eager and fused calls do the same work), the two calls in turn, medians after a warm-up "
             "call that includes compiling. Fused and eager Mish agree to float rounding "
             "(tests/test_networks_mish.py), so a long run's numbers are not bit-equal between them.", "",
             "| algorithm | ms per step, eager | ms per step, fused | speed-up | fused kernel |", "|---|---:|---:|---:|---|"]
    lines += [f"| {r['algorithm']} | {r['eager_ms']:.1f} | {r['fused_ms']:.1f} | {r['speedup']:.2f}x | {r['kernel']} |"
              for r in rows]
    out.write_text("\n".join(lines) + "\n")
