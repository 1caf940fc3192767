"""YAML into frozen dataclasses, strictly: the generic loader under megl.config's params schema.

`build_dataclass(tp, data, where)` converts parsed YAML to the dataclass `tp` (nested dataclasses,
Literal, Optional, dict, tuple, bool / int / float / str / Path), and an unknown key, a missing key
or a value of the wrong type is a ConfigError naming the dotted key path. `validate_tree` then
calls every dataclass's own `validate(where)`. Files are read as YAML 1.2 (ruamel.yaml), as DVC
reads and rewrites params.yaml: `dvc exp run -S` writes `- yes` unquoted, which YAML 1.1 readers
(PyYAML) would turn into a boolean.

Why not pydantic: the core package imports with torch/transformers/numpy/pandas/pillow only, and
the rules here fit in one small function.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml import YAML


class ConfigError(ValueError):
    """A params file that does not match the schema."""


def read_yaml(path: str | Path) -> Any:
    """A YAML file as DVC reads it (YAML 1.2: `yes` / `no` / `on` stay strings)."""
    return YAML(typ="safe", pure=True).load(Path(path).read_text())


def build_dataclass(tp: Any, value: Any, where: str) -> Any:
    """Strictly build dataclass `tp` from YAML data; ConfigError names `where` on any mismatch."""
    return _build(tp, value, where)


def validate_tree(obj: Any, where: str) -> None:
    """Call `validate(where)` on every dataclass in `obj`, depth first, each with its key path."""
    if dataclasses.is_dataclass(obj):
        if hasattr(obj, "validate"):
            obj.validate(where or "<root>")
        for f in dataclasses.fields(obj):
            validate_tree(getattr(obj, f.name), f"{where}.{f.name}".lstrip("."))
    elif isinstance(obj, dict):
        for key, value in obj.items():
            validate_tree(value, f"{where}.{key}".lstrip("."))


def _build(tp: Any, value: Any, where: str) -> Any:
    """Convert YAML data to `tp`, raising ConfigError naming `where` on any mismatch."""
    label = where or "<root>"
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{label}: expected a mapping, got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise ConfigError(f"{label}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
        kwargs = {}
        for name, f in fields.items():
            sub = f"{where}.{name}".lstrip(".")
            if name in value:
                kwargs[name] = _build(hints[name], value[name], sub)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{sub}: missing required key")
        return tp(**kwargs)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{label}: expected one of {list(allowed)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _build(inner, value, where)
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{label}: expected a mapping, got {type(value).__name__}")
        return {_build(key_tp, k, f"{where}.{k}"): _build(val_tp, v, f"{where}.{k}") for k, v in value.items()}
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if value is None:
            value = []
        if not isinstance(value, list):
            raise ConfigError(f"{label}: expected a list, got {type(value).__name__}")
        return tuple(_build(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{label}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{label}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{label}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{label}: must be a finite number, got {value!r}")
        return float(value)
    if tp is Path:
        return Path(value)
    if tp is Any:
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{label}: expected a string, got {value!r}")
        return value
    raise TypeError(f"config schema uses unsupported type {tp!r} at {label}")
