"""Reading and writing a :class:`Config`: nested mappings, YAML files, ``key.path=value``
overrides, with errors that name the key and list the valid ones."""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from sabma.config.legacy import legacy_override, upgrade_flat_keys
from sabma.config.sections import Config


def config_from_dict(values: dict[str, Any], overrides: list[str] | None = None) -> Config:
    """A :class:`Config` from nested ``values`` and ``key.path=value`` overrides (old flat keys
    are read into their sections: :mod:`sabma.config.legacy`)."""
    merged = _merge({}, copy.deepcopy(upgrade_flat_keys(values or {})))
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not of the form key.path=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            reason = " ".join(str(err).split())
            raise ValueError(f"override {item!r}: the value is not valid YAML ({reason})") from None
        for path in legacy_override(key.strip(), value):
            _set(merged, path, value, item)
    return _build(Config, merged, "")


def _set(merged: dict[str, Any], path: str, value: Any, item: str) -> None:
    node = merged
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {item!r}: {part!r} is not a section")
    node[leaf] = copy.deepcopy(value)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (``None``: the defaults) and apply overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"config file {file} does not exist")
        try:
            loaded = yaml.safe_load(file.read_text())
        except yaml.YAMLError as err:
            reason = " ".join(str(err).split())
            raise ValueError(f"config file {file} is not valid YAML: {reason}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"config file {file} must hold a mapping at the top level")
        values = loaded or {}
    return config_from_dict(values, overrides)


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def _build(cls: type[Any], values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise ValueError(
            f"config section {where.rstrip('.') or 'top level'!r} must be a mapping, got {values!r}"
        )
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
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            kwargs[name] = _build(kind, value, f"{where}{name}.")
        else:
            kwargs[name] = _coerce(value, kind, where + name)
    return cls(**kwargs)


def _coerce(value: Any, kind: Any, key: str) -> Any:
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
                return _coerce(value, option, key)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0])
    if origin is list:
        (item,) = typing.get_args(kind)
        items = value if isinstance(value, list) else [value]
        return [_coerce(v, item, key) for v in items]
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
