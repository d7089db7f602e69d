"""The ``method`` section: which method trains the subset, and one small section per method.

Each method reads only its own sections (``method.sabma``, ``method.swag``, …), and declares
them itself: ``Method.sections`` maps each name to its options dataclass, in the method's own
module, and defining the method registers them here (:func:`register_sections`). So this module
knows no method: it holds the three keys every method shares and the registry of sections.
``sabma methods --options`` lists them. ``method.variance`` is shared by the two methods that
learn a Gaussian's σ and D the same way: SA-BMA and VI.

A section that no imported method has registered yet is kept as its mapping and typed when it is
first read (the configuration can be read before the methods are imported); :meth:`MethodConfig.
typed` checks every section at once, as the run's configuration checks do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from sabma.config.typed import build, check_mapping, coerce

#: section name → its options dataclass, as the methods declare them (``Method.sections``)
SECTIONS: dict[str, type] = {}

#: the keys of ``method`` that are not a method's section: (name, type, default)
SHARED: tuple[tuple[str, type, Any], ...] = (
    ("name", str, "sabma"),  # see `sabma methods`
    ("frozen", str, "fixed"),  # fixed | prior: the rest at w_pre, or re-sampled
    ("frozen_std", float, 0.0),  # prior: N(w_pre, frozen_std²)
)


def register_sections(sections: Mapping[str, type]) -> None:
    """Make ``method.<name>`` a section of options ``kind`` for each item (a method's
    ``sections``); a name already taken by another dataclass is a TypeError."""
    for name, kind in sections.items():
        if not dataclasses.is_dataclass(kind):
            raise TypeError(f"method section {name!r} must be a dataclass, got {kind!r}")
        if name in {key for key, _, _ in SHARED}:
            raise TypeError(f"method section {name!r} would hide the key method.{name}")
        known = SECTIONS.setdefault(name, kind)
        if known is not kind:
            raise TypeError(
                f"method section {name!r} is declared twice: as {known.__qualname__} and as "
                f"{kind.__qualname__}"
            )


class MethodConfig:
    """``method.name``, ``method.frozen``, ``method.frozen_std``, and the registered sections as
    attributes (``cfg.method.sabma.rho``), each with its defaults until set."""

    name: str
    frozen: str
    frozen_std: float

    def __init__(
        self,
        name: str = "sabma",
        frozen: str = "fixed",
        frozen_std: float = 0.0,
        **sections: Any,
    ) -> None:
        self.name, self.frozen, self.frozen_std = name, frozen, frozen_std
        self._sections: dict[str, Any] = {}
        for key, value in sections.items():
            self._put(key, value, f"method.{key}.")

    @classmethod
    def from_mapping(cls, values: Any, where: str = "method.") -> MethodConfig:
        check_mapping(values, where)
        shared = {
            key: coerce(values[key], kind, where + key) for key, kind, _ in SHARED if key in values
        }
        method = cls(**shared)
        for key, value in values.items():
            if key not in shared:
                method._put(key, value, f"{where}{key}.")
        return method

    def _put(self, key: str, value: Any, where: str) -> None:
        kind = SECTIONS.get(key)
        if kind is not None and isinstance(value, kind):
            self._sections[key] = value
        elif kind is not None:
            self._sections[key] = build(kind, value, where)
        elif SECTIONS:  # the methods are imported, and none has this section
            raise ValueError(f"unknown config key {where.rstrip('.')!r}; {self._valid_keys()}")
        else:
            check_mapping(value, where)
            self._sections[key] = dict(value)

    def _valid_keys(self) -> str:
        return f"valid keys here: {sorted([key for key, _, _ in SHARED] + list(SECTIONS))}"

    def section(self, key: str) -> Any:
        """The options of section ``key`` (its defaults where none were given)."""
        kind = SECTIONS.get(key)
        if kind is None:
            raise AttributeError(f"no method has a section method.{key}; {self._valid_keys()}")
        value = self._sections.get(key, {})
        if not isinstance(value, kind):
            value = build(kind, value, f"method.{key}.")
            self._sections[key] = value
        return value

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):  # copy, pickle and the instance's own state
            raise AttributeError(key)
        return self.section(key)

    def typed(self) -> MethodConfig:
        """Every section checked against its method's dataclass (a one-line ValueError names a
        bad or unknown key); returns ``self``."""
        for key in list(self._sections):
            if key not in SECTIONS:
                raise ValueError(f"unknown config key 'method.{key}'; {self._valid_keys()}")
            self.section(key)
        return self

    def to_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {key: getattr(self, key) for key, _, _ in SHARED}
        for key in sorted(set(SECTIONS) | set(self._sections)):
            if key in SECTIONS:
                values[key] = dataclasses.asdict(self.section(key))
            else:  # not typed yet: no imported method has registered it
                values[key] = dict(self._sections[key])
        return values

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MethodConfig):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"MethodConfig({self.to_dict()!r})"
