"""Algorithms by name, and their configs by preset name with overrides."""

from __future__ import annotations

import dataclasses
from typing import Any

from policies.base import Algorithm
from policies.errors import ConfigError

_ALGORITHMS: dict[str, type[Algorithm]] = {}


def register(cls: type[Algorithm]) -> type[Algorithm]:
    if cls.name in _ALGORITHMS and _ALGORITHMS[cls.name] is not cls:
        raise ValueError(f"algorithm name {cls.name!r} is registered twice")
    _ALGORITHMS[cls.name] = cls
    return cls


def available() -> list[str]:
    _load_builtins()
    return sorted(_ALGORITHMS)


def get(name: str) -> type[Algorithm]:
    _load_builtins()
    if name not in _ALGORITHMS:
        raise ConfigError(f"unknown algorithm {name!r}; known: {', '.join(sorted(_ALGORITHMS))}")
    return _ALGORITHMS[name]


def make_config(name: str, preset: str = "paper", **overrides: Any):
    """The named preset of an algorithm's config, with fields replaced by `overrides`."""
    cls = get(name)
    if preset not in cls.presets:
        raise ConfigError(f"unknown preset {preset!r} for {name}; known: {', '.join(cls.presets)}")
    fields = {f.name for f in dataclasses.fields(cls.config_cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"{name} has no config field(s) {', '.join(unknown)}; fields: {', '.join(sorted(fields))}")
    return dataclasses.replace(cls.presets[preset], **overrides)


def _load_builtins() -> None:
    import policies.qgpo  # noqa: F401  (registers itself)
