"""SAC training throughput of stable-baselines3 (PyTorch) beside sbx (its JAX port by the same
maintainers), in one run on one machine, each pinned to one core (`diffbench perf sac`): which library trains
the locomotion datasets' behaviour policies. Same env, same SAC settings (the libraries' defaults,
`learning_starts` as ours); environment steps per second with one gradient update per step, timed after
a warm-up that includes JAX's compilation. sbx is optional: rows appear only when it is installed."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import time
from pathlib import Path

import gymnasium as gym
import torch

from bench.harness.provenance import code_version, hardware, made_by
from envs.locomotion.sac import env_id, quiet

LIBRARIES = ("stable-baselines3", "sbx")


def available() -> list[str]:
    return [lib for lib in LIBRARIES if importlib.util.find_spec("stable_baselines3" if lib != "sbx" else "sbx")]


def steps_per_second(library: str, env: str, steps: int, warmup: int, learning_starts: int, seed: int = 0) -> float:
    """Steps/s over `steps` steps that follow `warmup` steps (past `learning_starts`, so every timed step updates)."""
    if library == "sbx":
        # one thread, as torch below; must be set before JAX starts
        os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
        from sbx import SAC
    else:
        from stable_baselines3 import SAC
        torch.set_num_threads(1)
    model = quiet(SAC("MlpPolicy", gym.make(env_id(env)), seed=seed, learning_starts=learning_starts, verbose=0,
                      **({"device": "cpu"} if library != "sbx" else {})))
    model.learn(total_timesteps=warmup)
    began = time.perf_counter()
    model.learn(total_timesteps=steps, reset_num_timesteps=False)
    return steps / (time.perf_counter() - began)


def run(envs: list[str], steps: int, out: Path | None, command: str, warmup: int = 2_000,
        learning_starts: int = 1_000) -> dict[str, dict[str, float]]:
    if warmup <= learning_starts:
        raise ValueError(f"warmup ({warmup}) must pass learning_starts ({learning_starts}) so every timed step updates")
    cores = os.sched_getaffinity(0)
    # one core, set before JAX starts its threads (they inherit it): beyond its flags JAX keeps helper
    # threads busy on a second core, which two jobs on two cores do not have
    os.sched_setaffinity(0, {min(cores)})
    try:
        rates = {env: {lib: steps_per_second(lib, env, steps, warmup, learning_starts) for lib in available()}
                 for env in envs}
    finally:
        os.sched_setaffinity(0, cores)
    if out is not None:
        libs = available()
        lines = ["# SAC training throughput: stable-baselines3 beside sbx, one run", "",
                 made_by(command, None, code_version(), ("torch",)), "",
                 f"Hardware: {hardware()}. Each pinned to one core (the process's affinity; JAX otherwise keeps helper "
                 f"threads busy on a second core); {steps} timed steps after {warmup} (learning starts at "
                 f"{learning_starts}), one gradient update per step, libraries' default SAC settings. Versions: "
                 + ", ".join(f"{lib} {md.version(lib if lib != 'sbx' else 'sbx-rl')}" for lib in libs) + ".", "",
                 "| env | " + " | ".join(f"{lib} steps/s" for lib in libs) + (" | sbx / sb3 |" if len(libs) > 1 else " |"),
                 "|---|" + "---:|" * (len(libs) + (len(libs) > 1))]
        for env, r in rates.items():
            ratio = f" | {r['sbx'] / r['stable-baselines3']:.2f}×" if len(libs) > 1 else ""
            lines.append(f"| {env} | " + " | ".join(f"{r[lib]:.0f}" for lib in libs) + ratio + " |")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(lines) + "\n")
    return rates
