"""The grids of a validation search, as configuration: the candidates (a learning rate, a value
of the method's main knob), their configurations, and the configuration a searched run's
posterior was trained with. No training here (:mod:`sabma.pipeline.search` runs the search)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sabma.config import Config, config_from_dict
from sabma.methods import METHODS
from sabma.runs.folder import SEARCH_DIR, SEARCH_RESULT


@dataclass(frozen=True)
class Candidate:
    """One point of the search: a learning rate, and a value of the knob (None: as configured)."""

    lr: float
    knob: float | None = None

    def folder(self, out: Path, knob_name: str) -> Path:
        name = f"lr={self.lr:g}"
        if self.knob is not None:
            name += f",{knob_name.rsplit('.', 1)[-1]}={self.knob:g}"
        return out / SEARCH_DIR / name


def candidate_config(cfg: Config, lr: float, knob: float | None = None) -> Config:
    """``cfg`` at one learning rate (and value of its method's knob), the grids removed."""
    plain = replace(cfg, optim=replace(cfg.optim, lr=float(lr), lr_grid=[], knob_grid=[]))
    if knob is None:
        return plain
    values = plain.to_dict()
    *sections, leaf = method_knob(cfg).split(".")
    node = values
    for section in sections:
        node = node[section]
    node[leaf] = float(knob)
    return config_from_dict(values)


def method_knob(cfg: Config) -> str:
    """The configuration key of the method's main knob ("" when it has none)."""
    cls = METHODS.get(cfg.method.name)
    return cls.knob if cls is not None else ""


def knob_unused(cfg: Config) -> str:
    """Why the method's knob has no effect under ``cfg`` ("": it has one, or there is no knob;
    :meth:`~sabma.methods.base.Method.knob_unused`)."""
    cls = METHODS.get(cfg.method.name)
    return cls.knob_unused(cfg) if cls is not None and cls.knob else ""


def configured_knob(cfg: Config) -> Any:
    """The configured value of the method's knob."""
    node: Any = cfg
    for part in method_knob(cfg).split("."):
        node = getattr(node, part)
    return node


def is_search(cfg: Config) -> bool:
    return bool(cfg.optim.lr_grid or cfg.optim.knob_grid)


def label(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def resolved_config(cfg: Config, run_dir: Path) -> Config:
    """The configuration the run's posterior was trained with: ``cfg`` itself, or for a searched
    run, the configuration of the candidate that won (its learning rate and knob value)."""
    if not is_search(cfg) or not (run_dir / SEARCH_RESULT).is_file():
        return cfg
    search = json.loads((run_dir / SEARCH_RESULT).read_text())
    knob = search.get("knob")
    value = None
    if knob is not None:
        if knob["name"] != method_knob(cfg):
            raise ValueError(
                f"{run_dir / SEARCH_RESULT} searched {knob['name']}, but method "
                f"{cfg.method.name!r} now has the knob {method_knob(cfg)!r}"
            )
        if knob["chosen"] != configured_knob(cfg):
            value = float(knob["chosen"])
    return candidate_config(cfg, float(search["chosen"]), value)


def beyond_edge(values: list[float], best: float) -> float | None:
    """One step past the edge of ``values`` that ``best`` sits on — the grid's own ratio at that
    edge (v_edge² / v_next) — or None: ``best`` inside, fewer than two values, or a value ≤ 0
    (no geometric step)."""
    grid = sorted({float(v) for v in values})
    if len(grid) < 2 or grid[0] <= 0 or best not in (grid[0], grid[-1]):
        return None
    if best == grid[-1]:
        return grid[-1] * grid[-1] / grid[-2]
    return grid[0] * grid[0] / grid[1]


def on_edge(values: list[float], best: float) -> bool:
    """Whether ``best`` is the smallest or largest of two or more ``values``."""
    grid = sorted({float(v) for v in values})
    return len(grid) > 1 and best in (grid[0], grid[-1])
