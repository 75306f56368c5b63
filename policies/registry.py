"""Algorithms by name, and their configs by preset name with overrides.

Built-in algorithms register themselves on import; third-party packages add theirs through the
`diffbench.algorithms` entry point group (`name = "package.module:AlgorithmClass"`), so a new
algorithm is one module and, outside this repository, one line of packaging metadata.
"""

from __future__ import annotations

import warnings
from importlib.metadata import entry_points
from typing import Any, Mapping

from policies import config as cfg
from policies.base import Algorithm
from policies.errors import ConfigError

ENTRY_POINT_GROUP = "diffbench.algorithms"
_BUILTINS = ("policies.algorithms.qgpo:QGPO", "policies.algorithms.bc:BC", "policies.algorithms.ddpo:DDPO",
             "policies.algorithms.ctrl:CTRL", "policies.algorithms.dxmi:DxMI",
             "policies.algorithms.td3bc:TD3BC", "policies.algorithms.iql:IQL",
             "policies.algorithms.diffusion_ql:DiffusionQL", "policies.algorithms.idql:IDQL",
             "policies.algorithms.sfbc:SfBC", "policies.algorithms.srpo:SRPO", "policies.algorithms.fql:FQL",
             "policies.algorithms.dac:DAC")  # module:class, registered on first lookup
_ALGORITHMS: dict[str, type[Algorithm]] = {}
_loaded = False


def register(cls: type[Algorithm]) -> type[Algorithm]:
    if cls.name in _ALGORITHMS and _ALGORITHMS[cls.name] is not cls:
        raise ValueError(f"algorithm name {cls.name!r} is registered twice")
    _ALGORITHMS[cls.name] = cls
    return cls


def available() -> list[str]:
    _load()
    return sorted(_ALGORITHMS)


def get(name: str) -> type[Algorithm]:
    _load()
    if name not in _ALGORITHMS:
        raise ConfigError(f"unknown algorithm {name!r}; known: {', '.join(sorted(_ALGORITHMS))}")
    return _ALGORITHMS[name]


def make_config(name: str, preset: str = "paper", overrides: Mapping[str, Any] | None = None, **kwargs: Any):
    """The named preset of an algorithm's config with `overrides` (dotted keys or nested) applied."""
    cls = get(name)
    if preset not in cls.presets:
        raise ConfigError(f"unknown preset {preset!r} for {name}; known: {', '.join(cls.presets)}")
    return cfg.apply(cls.presets[preset], {**(overrides or {}), **kwargs}, where="")


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib

    for target in _BUILTINS:
        module, _, attr = target.partition(":")
        register(getattr(importlib.import_module(module), attr))
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        # a broken plug-in must not take the built-in algorithms down with it: one warning naming it
        try:
            algo = ep.load()
        except Exception as exc:
            warnings.warn(f"algorithm plug-in {ep.name!r} ({ep.value}) failed to import and is left out: "
                          f"{type(exc).__name__}: {exc}", stacklevel=2)
            continue
        if not (isinstance(algo, type) and issubclass(algo, Algorithm)):
            warnings.warn(f"entry point {ep.name!r} in {ENTRY_POINT_GROUP} is {ep.value}, not an Algorithm subclass; "
                          "left out", stacklevel=2)
            continue
        try:
            register(algo)
        except ValueError as exc:
            warnings.warn(f"algorithm plug-in {ep.name!r} ({ep.value}) is left out: {exc}", stacklevel=2)
