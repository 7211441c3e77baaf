"""Strict, typed loading of plain YAML data into frozen dataclasses.

This module owns one decision: how a value from a config file (or an
environment variable) becomes a typed field, and what the user is told when
it cannot. Unknown keys, missing keys, wrong types and failed checks all raise
`ConfigError` naming the file and the dotted key, so a typo in `conf/` stops
start-up with a sentence instead of surfacing later as an empty value.

Supported field types: dataclasses (nested), `str`, `int`, `float`, `bool`,
`Literal[...]`, `X | None`, `list[X]`, `tuple[X, ...]` and `dict[str, X]`.
A dataclass validates itself in `__post_init__` by raising `ValueError`; the
message is re-raised with the file and key in front.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the file and the key."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")


def load(cls: type[T], data: Any, source: str, key: str = "") -> T:
    """Build `cls` from `data` (parsed YAML), raising ConfigError on any mismatch."""
    return typing.cast(T, _convert(cls, data, source, key))


def _join(key: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{key}[{part}]"
    return f"{key}.{part}" if key else part


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, source: str, key: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _convert_dataclass(tp, value, source, key)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, source, key)
            except ConfigError as err:
                errors.append(err.problem)
        raise ConfigError(source, key, " / ".join(errors))
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(
                source, key, f"must be one of {', '.join(map(repr, allowed))}, got {value!r}"
            )
        return value
    if origin is list or origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(source, key, f"expected a list, got {_describe(value)}")
        (item_tp, *_) = get_args(tp)
        items = [_convert(item_tp, v, source, _join(key, i)) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        key_tp, value_tp = get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(source, key, f"expected a mapping, got {_describe(value)}")
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(source, _join(key, str(k)), "keys must be strings")
            out[_convert(key_tp, k, source, _join(key, k))] = _convert(
                value_tp, v, source, _join(key, k)
            )
        return out
    return _convert_scalar(tp, value, source, key)


def _convert_scalar(tp: Any, value: Any, source: str, key: str) -> Any:
    # bool is a subclass of int in Python; a YAML `true` is never a valid port.
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"strict config does not support fields of type {tp!r}")
    raise ConfigError(source, key, f"expected {_type_name(tp)}, got {_describe(value)}")


def _convert_dataclass(cls: type[Any], value: Any, source: str, key: str) -> Any:
    if not isinstance(value, Mapping):
        raise ConfigError(source, key, f"expected a mapping, got {_describe(value)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(value) - set(fields), key=str)
    if unknown:
        raise ConfigError(
            source,
            _join(key, str(unknown[0])),
            f"unknown key (allowed here: {', '.join(sorted(fields))})",
        )
    hints = get_type_hints(cls)
    kwargs = {}
    for name, field in fields.items():
        if name in value:
            kwargs[name] = _convert(hints[name], value[name], source, _join(key, name))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(source, _join(key, name), "missing required key")
    try:
        return cls(**kwargs)
    except ValueError as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(source, key, str(err)) from None


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}"
