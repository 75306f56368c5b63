"""Typed configs: frozen dataclasses, overridden by `key=value` or YAML, checked field by field.

Every algorithm's config is a frozen dataclass whose field annotations are the contract: an
override for a key that does not exist, or a value of the wrong type, is one `ConfigError` that
names the key and what it accepts. Nested dataclasses (a `SamplerSpec`) are reached with dotted
keys (`sampler.steps=20`) or nested YAML mappings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Mapping

import yaml

from policies.errors import ConfigError


class Config:
    """Base of algorithm configs (frozen dataclasses): the dict form stored with checkpoints and results."""

    # settings added after results were stored, each with the value every earlier run had: at that value a setting
    # is left out of a run's identity and of its stages' fingerprints, so stores and checkpoints made before it
    # still resume (as the protocol leaves out curve points when they are off)
    LATER: ClassVar[Mapping[str, Any]] = {}

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def identity(self) -> dict[str, Any]:
        """`to_dict` without the `LATER` settings that hold their earlier value: what names a run and its stages."""
        return {k: v for k, v in self.to_dict().items() if not (k in self.LATER and v == self.LATER[k])}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        return from_dict(cls, data)


MAX_SEED = 2**63 - 1


def check_bounds(config: Any, algorithm: str, at_least_one: tuple[str, ...] = (), non_negative: tuple[str, ...] = (),
                 positive: tuple[str, ...] = (), finite_non_negative: tuple[str, ...] = (),
                 unit_interval: tuple[str, ...] = ()) -> None:
    """The range checks every config makes: counts >= 1, step budgets >= 0, rates > 0, a seed >= 0, weights
    and temperatures finite and >= 0, discounts and rates in [0, 1] (NaN fails every check)."""
    if hasattr(config, "seed"):
        non_negative = (*non_negative, "seed")
    for names, bad, bound in ((at_least_one, lambda v: v < 1, ">= 1"), (non_negative, lambda v: v < 0, ">= 0"),
                              (positive, lambda v: not v > 0, "> 0"),
                              (finite_non_negative, lambda v: not (math.isfinite(v) and v >= 0), "a finite number >= 0"),
                              (unit_interval, lambda v: not 0 <= v <= 1, "in [0, 1]")):
        for name in names:
            if bad(getattr(config, name)):
                raise ConfigError(f"{algorithm}: {name} must be {bound}, got {getattr(config, name)}")
    if hasattr(config, "seed") and config.seed > MAX_SEED:  # the results store keeps it as a 64-bit integer
        raise ConfigError(f"{algorithm}: seed must be at most 2**63 - 1 = {MAX_SEED} (the results store's integer), "
                          f"got {config.seed}")


def fields_of(cls: type) -> dict[str, Any]:
    """Field name -> resolved type annotation."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def to_dict(config: Any) -> dict[str, Any]:
    """Plain JSON-able dict (tuples become lists), the form stored beside results and checkpoints."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(cls: type, data: Mapping[str, Any], where: str = "") -> Any:
    """Rebuild a config from `to_dict` output, defaults filling keys it lacks."""
    return apply(cls(), data, where=where) if _all_defaults(cls) else cls(**_coerce_all(cls, data, where))


def _all_defaults(cls: type) -> bool:
    return all(f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
               for f in dataclasses.fields(cls))


def _coerce_all(cls: type, data: Mapping[str, Any], where: str) -> dict[str, Any]:
    types_ = fields_of(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        raise ConfigError(_unknown_message(where, unknown[0], types_))
    return {k: coerce(v, types_[k], f"{where}{k}") for k, v in data.items()}


def apply(config: Any, overrides: Mapping[str, Any], where: str = "") -> Any:
    """`config` with `overrides` (flat dotted keys or nested mappings) applied and type-checked."""
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        if not isinstance(key, str):
            raise ConfigError(f"config keys must be strings, got {key!r}")
        head, _, rest = key.partition(".")
        if rest:
            value = {rest: value}
        if isinstance(value, Mapping) and isinstance(nested.get(head), Mapping):
            nested[head] = {**nested[head], **value}
        else:
            nested[head] = value
    types_ = fields_of(type(config))
    changes = {}
    for key, value in nested.items():
        if key not in types_:
            raise ConfigError(_unknown_message(where, key, types_))
        current = getattr(config, key)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            changes[key] = apply(current, value, where=f"{where}{key}.")
        else:
            changes[key] = coerce(value, types_[key], f"{where}{key}")
    return dataclasses.replace(config, **changes)


def _unknown_message(where: str, key: str, types_: Mapping[str, Any]) -> str:
    scope = f" of {where.rstrip('.')}" if where else ""
    return f"unknown config key '{where}{key}'; known keys{scope}: {', '.join(sorted(types_))}"


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """`value` as `annotation` (int, float, bool, str, tuple[T, ...], a dataclass, or a union of them)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            try:
                return coerce(value, option, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key} must be {_name(annotation)}, got {value!r} ({type(value).__name__})")
    if annotation is type(None):
        if value is None:
            return None
    elif annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation in (int, float) and isinstance(value, str) and _number(value) is not None:
        return coerce(_number(value), annotation, key)  # PyYAML reads 1e-4 (no dot) as a string
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{key} must be a finite number, got {value!r}")
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif origin is tuple:
        args = typing.get_args(annotation)
        if isinstance(value, (list, tuple)):
            item = args[0] if len(args) == 2 and args[1] is Ellipsis else None
            if item is not None:
                return tuple(coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
            if len(args) == len(value):
                return tuple(coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    elif origin is dict or annotation is dict:
        if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
            return dict(value)
    elif dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if isinstance(value, Mapping):
            return from_dict(annotation, value, where=f"{key}.")
    elif annotation is Any:
        return value
    raise ConfigError(f"{key} must be {_name(annotation)}, got {value!r} ({type(value).__name__})")


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _name(annotation: Any) -> str:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_name(a) for a in typing.get_args(annotation))
    if typing.get_origin(annotation) is tuple:
        return "a list of " + _name(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) is dict or annotation is dict:
        return "a mapping of names to values"
    if dataclasses.is_dataclass(annotation):
        return f"a mapping of {annotation.__name__} fields ({', '.join(fields_of(annotation))})"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            type(None): "null"}.get(annotation, str(annotation))


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """`key=value` strings -> {key: value}, values read as YAML (`3`, `1e-4`, `[256,128]`, `true`)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected key=value, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"cannot read the value of {key.strip()!r} ({text!r}) as YAML: {exc}") from exc
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """`safe_load` that refuses a mapping naming a key twice (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: Path) -> Any:
    """A YAML file read safely (no tags that build objects); a missing, non-UTF-8 or malformed file, or one that
    names a key twice, is one ConfigError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from exc
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path} is not valid YAML{where}: {problem}") from exc


def config_hash(*parts: Any) -> str:
    """Short stable digest of JSON-able parts (a run's algorithm, dataset, seed and full config)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
