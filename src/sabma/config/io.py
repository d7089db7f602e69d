"""Reading and writing a :class:`Config`: nested mappings, YAML files, ``key.path=value``
overrides, with errors that name the key and list the valid ones."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from sabma.config.legacy import legacy_override, upgrade_flat_keys
from sabma.config.sections import Config
from sabma.config.typed import build


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
    return build(Config, merged, "")


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
