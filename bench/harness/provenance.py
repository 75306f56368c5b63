"""What produced a number: code version, hardware, package versions."""

from __future__ import annotations

import hashlib
import json
import importlib.metadata as md
import os
import subprocess
from pathlib import Path

import torch

from envs.numerics import cpu_model


def code_version() -> str:
    """The git commit of the checkout (with '+dirty' for uncommitted changes), else the package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "diffbench " + md.version("diffbench")


def budget_label(name: str, budget: object) -> str:
    """A budget's name and a digest of its values: a study's saved rows are reused only under the same values."""
    return f"{name}:{hashlib.sha1(repr(budget).encode()).hexdigest()[:10]}"


def hardware() -> str:
    text = f"{cpu_model()}, {os.cpu_count()} logical CPUs"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def run_threads(recorded: object) -> int:
    """The torch threads a run recorded in its store row's hardware JSON (1 where it recorded none): wall
    seconds times this are the core-seconds it held."""
    return (json.loads(recorded).get("torch_threads", 1) or 1) if isinstance(recorded, str) and recorded else 1


def package_versions(names: tuple[str, ...] = ("torch", "numpy", "minari", "gymnasium", "gymnasium-robotics", "mujoco")) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "absent"
    return out


def made_by(command: str, seconds: float | None, version: str, packages: tuple[str, ...] = ("torch", "numpy")) -> str:
    """The provenance line every committed result starts with."""
    took = "" if seconds is None else (f" in {seconds / 60:.0f} min" if seconds >= 600 else f" in {seconds:.0f} s")
    return (f"Made by `{command}`{took} on {hardware()}; code {version}; "
            + ", ".join(f"{k} {v}" for k, v in package_versions(packages).items()) + ".")
