"""Choosing the learning rate, then the method's main knob, on the validation split — the same
way for every method.

Every candidate is a complete run of its own in ``OUT/lr_search/<name>`` (same data, seed,
budget, model selection), evaluated on the validation split only; the lowest validation NLL of
the method's predictive wins. Two stages, one knob at a time:

1. the learning rate: one candidate per value of ``optim.lr_grid`` (``lr=<value>``; the
   configuration's ``optim.lr`` alone when the grid is empty), at the configured knob;
2. the knob (``optim.knob_grid``; the method's :attr:`~sabma.methods.base.Method.knob`, e.g.
   ``method.sam.rho``): one candidate per other value of the grid, at the learning rate stage 1
   chose (``lr=<value>,<knob>=<value>``). The configured value's candidate is stage 1's run.

The winner of all candidates becomes the run: its posterior and training log are copied into
``OUT``, and only then is the test split evaluated, once. Candidates that cannot run at their
learning rate (:class:`~sabma.methods.base.UnstableSetting`: the prior term or a coupling would
be unstable) or that diverged (``FloatingPointError``) are recorded as failed (None) and skipped;
any other error stops the search.
``lr_search.json`` keeps every candidate's validation NLL; ``metrics.json`` gets ``"lr"``,
``"lr_search"`` and, with a knob grid, ``"knob"``. The run's ``config.yaml`` keeps the grids;
:func:`resolved_config` gives the configuration of the candidate that won (what evaluation and
analyses load).

Interrupted searches resume: finished candidates are reused, a half-trained one is resumed.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sabma.config import Config, config_from_dict, dump_config
from sabma.ood.evaluate import OODOptions
from sabma.runs.files import atomic_write_json, atomic_write_text
from sabma.runs.folder import (
    CHECKPOINT,
    CONFIG,
    METRICS,
    POSTERIOR,
    POSTERIOR_META,
    SEARCH_DIR,
    SEARCH_RESULT,
    TRAIN_LOG,
    read_metrics,
)

log = logging.getLogger(__name__)

COPIED = (POSTERIOR, POSTERIOR_META, TRAIN_LOG)


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
    from sabma.methods import METHODS

    cls = METHODS.get(cfg.method.name)
    return cls.knob if cls is not None else ""


def knob_unused(cfg: Config) -> str:
    """Why the method's knob has no effect under ``cfg`` ("": it has one, or there is no knob;
    :meth:`~sabma.methods.base.Method.knob_unused`)."""
    from sabma.methods import METHODS

    cls = METHODS.get(cfg.method.name)
    return cls.knob_unused(cfg) if cls is not None and cls.knob else ""


def configured_knob(cfg: Config) -> Any:
    """The configured value of the method's knob."""
    node: Any = cfg
    for part in method_knob(cfg).split("."):
        node = getattr(node, part)
    return node


def check_grid(grid: list[float]) -> None:
    if any(not (isinstance(v, float) and math.isfinite(v) and v > 0) for v in grid):
        raise ValueError(f"optim.lr_grid must hold positive learning rates, got {grid}")
    if len(set(grid)) != len(grid):
        raise ValueError(f"optim.lr_grid has repeated values: {grid}")


def check_knob_grid(cfg: Config) -> None:
    """``optim.knob_grid``: only for a method with a knob, finite values, no repeats, each a
    valid setting of the knob (checked as the candidate's configuration)."""
    grid = cfg.optim.knob_grid
    if not grid:
        return
    knob = method_knob(cfg)
    if not knob:
        raise ValueError(
            f"optim.knob_grid is set, but method {cfg.method.name!r} has no knob to search "
            "besides the learning rate; remove optim.knob_grid"
        )
    unused = knob_unused(cfg)
    if unused:
        raise ValueError(f"optim.knob_grid searches a knob that does nothing here: {unused}")
    if any(not (isinstance(v, int | float) and math.isfinite(v)) for v in grid):
        raise ValueError(f"optim.knob_grid must hold finite values of {knob}, got {grid}")
    if len({_label(v) for v in grid}) != len(grid):
        raise ValueError(f"optim.knob_grid has repeated values (to 6 digits): {grid}")
    from sabma.pipeline.checks import check_config

    for value in grid:
        try:
            check_config(candidate_config(cfg, cfg.optim.lr, value))
        except ValueError as err:
            raise ValueError(f"optim.knob_grid value {value:g}: {err}") from None


def is_search(cfg: Config) -> bool:
    return bool(cfg.optim.lr_grid or cfg.optim.knob_grid)


def train_with_search(
    cfg: Config, out: Path, progress: bool = True, ood: OODOptions | None = None
) -> dict[str, Any]:
    """Train every candidate, keep the best on validation, evaluate it on the test split (and
    the ``ood`` sets); returns its metrics (see the module docstring)."""
    from sabma.pipeline.evaluate import evaluate_run

    # the grids were checked with the rest of the configuration (train_run: check_config)
    if (out / METRICS).exists():
        raise ValueError(f"{out} already holds a finished run; choose another --out")
    knob = method_knob(cfg) if cfg.optim.knob_grid else ""
    lrs = cfg.optim.lr_grid or [cfg.optim.lr]
    current = configured_knob(cfg) if knob else None
    others = [float(v) for v in cfg.optim.knob_grid if v != current]
    # before training: a stale candidate is an error, not a failed candidate
    for candidate in [Candidate(lr) for lr in lrs] + [
        Candidate(lr, v) for lr in lrs for v in others
    ]:
        _check_candidate(
            candidate_config(cfg, candidate.lr, candidate.knob), candidate.folder(out, knob)
        )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / CONFIG, dump_config(cfg))
    start = time.perf_counter()
    scores: dict[Candidate, float | None] = {}
    for lr in lrs:
        scores[Candidate(lr)] = _score(cfg, Candidate(lr), out, knob, progress)
    best_lr = _best(scores, cfg).lr
    for value in others:
        scores[Candidate(best_lr, value)] = _score(
            cfg, Candidate(best_lr, value), out, knob, progress
        )
    best = _best(scores, cfg)
    chosen = best.folder(out, knob)
    for name in COPIED:
        shutil.copy2(chosen / name, out / name)
    finished = [c for c, v in scores.items() if v is not None]
    train_s = sum(read_metrics(c.folder(out, knob))["timing"]["train_s"] for c in finished)
    lr_scores = {f"{c.lr:g}": v for c, v in scores.items() if c.knob is None}
    search: dict[str, Any] = {
        "grid": lr_scores,
        "chosen": best.lr,
        "search_s": time.perf_counter() - start,
    }
    knob_section = None
    if knob:
        grid = cfg.optim.knob_grid  # in the grid's order; the configured value first if not in it
        order: list[Any] = grid if current in grid else [current, *grid]
        knob_scores = {
            _label(v): scores[Candidate(best_lr, None if v == current else float(v))] for v in order
        }
        won = current if best.knob is None else best.knob
        knob_section = {"name": knob, "lr": best_lr, "grid": knob_scores, "chosen": won}
        search["knob"] = knob_section
    atomic_write_json(out / SEARCH_RESULT, search)
    metrics = evaluate_run(
        out, progress=progress, temperature_scaling=cfg.eval.temperature_scaling, ood=ood
    )
    metrics["lr"] = best.lr
    metrics["lr_search"] = {"grid": lr_scores, "train_s": train_s}
    if knob_section is not None:
        metrics["lr_search"]["knob"] = knob_section
        metrics["knob"] = {"name": knob, "value": knob_section["chosen"]}
    metrics["timing"]["train_s"] = read_metrics(chosen)["timing"]["train_s"]
    atomic_write_json(out / METRICS, metrics)
    return metrics


def _check_candidate(cfg: Config, folder: Path) -> None:
    """Refuse a candidate folder holding a run of other settings, finished or half-trained (it
    would otherwise count as a candidate that failed to train)."""
    from sabma.pipeline.resume import same_config
    from sabma.pipeline.train import check_reusable

    check_reusable(cfg, folder)
    if (folder / CHECKPOINT).is_file() and (folder / CONFIG).is_file():
        if not same_config(folder / CONFIG, cfg):
            raise ValueError(
                f"{folder} holds a half-trained run with another configuration; remove it or "
                "choose another --out"
            )


def _label(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def _score(cfg: Config, candidate: Candidate, out: Path, knob: str, progress: bool) -> float | None:
    """Train (or reuse) one candidate; its validation NLL (None: it could not train)."""
    from sabma.methods.base import UnstableSetting
    from sabma.pipeline.train import run_or_reuse

    label = candidate.folder(out, knob).name
    try:
        metrics = run_or_reuse(
            candidate_config(cfg, candidate.lr, candidate.knob),
            candidate.folder(out, knob),
            progress,
            False,
        )
    except (UnstableSetting, FloatingPointError) as err:  # unstable or diverged here
        log.warning("%s: %s", label, str(err).splitlines()[0])
        return None
    nll = float(metrics["val"]["bma"]["nll"])
    if not math.isfinite(nll):
        return None
    log.info("%s: validation NLL %.4f", label, nll)
    return nll


def _best(scores: dict[Candidate, float | None], cfg: Config) -> Candidate:
    finished = {c: v for c, v in scores.items() if v is not None}
    if not finished:
        raise FloatingPointError(
            f"no candidate of optim.lr_grid={cfg.optim.lr_grid} (optim.knob_grid="
            f"{cfg.optim.knob_grid}) trained; lower the learning rates"
        )
    return min(finished, key=lambda c: finished[c])


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
