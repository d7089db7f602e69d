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
learning rate (:class:`~sabma.methods.failures.UnstableSetting`: the prior term or a coupling would
be unstable) or that diverged (``FloatingPointError``) are recorded as failed (None) and skipped;
any other error stops the search.
``lr_search.json`` keeps every candidate's validation NLL; ``metrics.json`` gets ``"lr"``,
``"lr_search"`` and, with a knob grid, ``"knob"``. The run's ``config.yaml`` keeps the grids;
:func:`resolved_config` gives the configuration of the candidate that won (what evaluation and
analyses load).

**The search does not stop at its edge.** When the best learning rate is the smallest or the
largest of its grid, one more candidate is tried one step beyond it (the grid's own ratio at that
edge: 3·10⁻³ after {3·10⁻⁴, 10⁻³, 3·10⁻³} gives 9·10⁻³); the same for the knob's grid (with the
configured value in it). One step per grid, the same rule for every method; a step that is not a
valid setting of the knob (a dropout rate ≥ 1) is not taken. Where the winner still sits on the
edge of its (extended) grid, ``"edge"`` in ``lr_search.json`` and metrics.json's ``lr_search``
says so (``["lr"]``, ``["knob"]``), and the benchmark's results.md lists those runs.

Interrupted searches resume: finished candidates are reused, a half-trained one is resumed.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any, cast

from sabma.config import Config, dump_config
from sabma.methods.failures import UnstableSetting
from sabma.ood.evaluate import OODOptions
from sabma.pipeline.checks import check_config
from sabma.pipeline.evaluate import evaluate_run
from sabma.pipeline.grid import (
    Candidate,
    beyond_edge,
    candidate_config,
    configured_knob,
    label,
    method_knob,
    on_edge,
)
from sabma.pipeline.resume import same_config
from sabma.pipeline.single import check_reusable, finished_or, train_single
from sabma.runs.files import atomic_write_json, atomic_write_text
from sabma.runs.folder import (
    CHECKPOINT,
    CONFIG,
    METRICS,
    POSTERIOR,
    POSTERIOR_META,
    SEARCH_RESULT,
    TRAIN_LOG,
    read_metrics,
)

log = logging.getLogger(__name__)

COPIED = (POSTERIOR, POSTERIOR_META, TRAIN_LOG)


def train_with_search(
    cfg: Config, out: Path, progress: bool = True, ood: OODOptions | None = None
) -> dict[str, Any]:
    """Train every candidate, keep the best on validation, evaluate it on the test split (and
    the ``ood`` sets); returns its metrics (see the module docstring)."""
    # the grids were checked with the rest of the configuration (train_run: check_config)
    if (out / METRICS).exists():
        raise ValueError(f"{out} already holds a finished run; choose another --out")
    knob = method_knob(cfg) if cfg.optim.knob_grid else ""
    lrs = cfg.optim.lr_grid or [cfg.optim.lr]
    current = configured_knob(cfg) if knob else None
    others = [float(v) for v in cfg.optim.knob_grid if v != current]
    # before training: a stale candidate is an error, not a failed candidate
    plain, knobbed = [Candidate(lr) for lr in lrs], [Candidate(lr, v) for lr in lrs for v in others]
    for candidate in plain + knobbed:
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
    extra_lr = beyond_edge(lrs, best_lr)
    if extra_lr is not None and _extend(cfg, Candidate(extra_lr), out, knob):
        scores[Candidate(extra_lr)] = _score(cfg, Candidate(extra_lr), out, knob, progress)
        best_lr = _best(scores, cfg).lr
    for value in others:
        scores[Candidate(best_lr, value)] = _score(
            cfg, Candidate(best_lr, value), out, knob, progress
        )
    best = _best(scores, cfg)
    knob_values = [float(cast(float, current)), *others] if knob and _numeric(current) else []
    won = _won(best, current) if knob_values else None
    extra_knob = beyond_edge(knob_values, won) if won is not None else None
    if extra_knob is not None and _extend(cfg, Candidate(best_lr, extra_knob), out, knob):
        scores[Candidate(best_lr, extra_knob)] = _score(
            cfg, Candidate(best_lr, extra_knob), out, knob, progress
        )
        knob_values.append(extra_knob)
        best = _best(scores, cfg)
    lr_values = [c.lr for c in scores if c.knob is None]
    edges = [name for name, hit in (("lr", on_edge(lr_values, best.lr)),) if hit]
    won = _won(best, current) if knob_values else None
    if won is not None and on_edge(knob_values, won):
        edges.append("knob")
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
        "edge": edges,
    }
    knob_section = _knob_section(cfg, knob, current, extra_knob, scores, best) if knob else None
    if knob_section is not None:
        search["knob"] = knob_section
    atomic_write_json(out / SEARCH_RESULT, search)
    metrics = evaluate_run(
        out, progress=progress, temperature_scaling=cfg.eval.temperature_scaling, ood=ood
    )
    metrics["lr"] = best.lr
    metrics["lr_search"] = {"grid": lr_scores, "train_s": train_s, "edge": edges}
    if knob_section is not None:
        metrics["lr_search"]["knob"] = knob_section
        metrics["knob"] = {"name": knob, "value": knob_section["chosen"]}
    metrics["timing"]["train_s"] = read_metrics(chosen)["timing"]["train_s"]
    atomic_write_json(out / METRICS, metrics)
    return metrics


def _knob_section(
    cfg: Config,
    knob: str,
    current: Any,
    extra: float | None,
    scores: dict[Candidate, float | None],
    best: Candidate,
) -> dict[str, Any]:
    """The knob's scores at the chosen learning rate, in the grid's order (the configured value
    first where the grid lacks it, the step beyond the edge last), and the value chosen."""
    grid = cfg.optim.knob_grid
    order: list[Any] = grid if current in grid else [current, *grid]
    if extra is not None and Candidate(best.lr, extra) in scores:
        order = [*order, extra]
    knob_scores = {
        label(v): scores.get(Candidate(best.lr, None if v == current else float(v))) for v in order
    }
    won = current if best.knob is None else best.knob
    return {"name": knob, "lr": best.lr, "grid": knob_scores, "chosen": won}


def _won(best: Candidate, current: Any) -> float:
    """The knob value of the best candidate (the configured one where it has none)."""
    return float(current) if best.knob is None else float(best.knob)


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _extend(cfg: Config, candidate: Candidate, out: Path, knob: str) -> bool:
    """Whether the step past a grid's edge is a valid setting to try (a knob's own bounds, e.g.
    a dropout rate below 1, can forbid it: then the grid stays as it was)."""
    config = candidate_config(cfg, candidate.lr, candidate.knob)
    try:
        check_config(config)
    except ValueError as err:
        log.info("search: not extending the grid to %s (%s)", candidate, err)
        return False
    _check_candidate(config, candidate.folder(out, knob))
    return True


def _check_candidate(cfg: Config, folder: Path) -> None:
    """Refuse a candidate folder holding a run of other settings, finished or half-trained (it
    would otherwise count as a candidate that failed to train)."""
    check_reusable(cfg, folder)
    if (folder / CHECKPOINT).is_file() and (folder / CONFIG).is_file():
        if not same_config(folder / CONFIG, cfg):
            raise ValueError(
                f"{folder} holds a half-trained run with another configuration; remove it or "
                "choose another --out"
            )


def _score(cfg: Config, candidate: Candidate, out: Path, knob: str, progress: bool) -> float | None:
    """Train (or reuse) one candidate; its validation NLL (None: it could not train)."""
    label = candidate.folder(out, knob).name
    try:
        config = candidate_config(cfg, candidate.lr, candidate.knob)
        folder = candidate.folder(out, knob)
        metrics = finished_or(
            config,
            folder,
            lambda resume: train_single(config, folder, progress, resume, test=False),
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
