"""Typed configuration sections from nested mappings: every key checked against the section's
dataclass fields, every value coerced to the field's type, with errors that name the key."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import fields
from typing import Any


def build(cls: type[Any], values: Any, where: str) -> Any:
    """An instance of the dataclass ``cls`` from the mapping ``values`` (missing keys keep their
    defaults); ``where`` is the section's key path, for the errors. A section class with a
    ``from_mapping`` classmethod (the ``method`` section, whose sections the methods declare)
    builds itself."""
    check_mapping(values, where)
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"unknown config key {where + unknown[0]!r}; valid keys here: {sorted(known)}"
        )
    kwargs = {}
    for name, value in values.items():
        kind = hints[name]
        if isinstance(kind, type) and hasattr(kind, "from_mapping"):
            kwargs[name] = kind.from_mapping(value, f"{where}{name}.")
        elif isinstance(kind, type) and dataclasses.is_dataclass(kind):
            kwargs[name] = build(kind, value, f"{where}{name}.")
        else:
            kwargs[name] = coerce(value, kind, where + name)
    return cls(**kwargs)


def check_mapping(values: Any, where: str) -> None:
    if not isinstance(values, dict):
        raise ValueError(
            f"config section {where.rstrip('.') or 'top level'!r} must be a mapping, got {values!r}"
        )


def coerce(value: Any, kind: Any, key: str) -> Any:
    if isinstance(value, dict):
        raise ValueError(f"config key {key!r} is a value, not a section")
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(value, option, key)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0])
    if origin is list:
        (item,) = typing.get_args(kind)
        items = value if isinstance(value, list) else [value]
        return [coerce(v, item, key) for v in items]
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"config key {key!r} must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"config key {key!r} must be an integer, got {value!r}")
    if kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"config key {key!r} must be a number, got {value!r}")
    if kind is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"config key {key!r} must be a string, got {value!r}")
    return value
