"""Choosing the learning rate on the validation split, the same way for every method.

With ``optim.lr_grid`` set, a run is trained once per learning rate of the grid — each candidate
a complete run of its own in ``OUT/lr_search/lr=<value>`` (same data, seed, budget, model
selection), evaluated on the validation split only — and the candidate with the lowest
validation NLL of the method's predictive becomes the run: its posterior and training log are
copied into ``OUT``, and only then is the test split evaluated, once. Candidates that cannot run
at a learning rate (the prior term would be unstable, training diverged) are recorded as
failed and skipped. ``lr_search.json`` keeps every candidate's validation NLL; ``metrics.json``
gets ``"lr"`` and ``"lr_search"``.

Interrupted searches resume: finished candidates are reused, a half-trained one is resumed.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from sabma.config import Config, dump_config
from sabma.runs.files import atomic_write_json, atomic_write_text
from sabma.runs.folder import (
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


def candidate_config(cfg: Config, lr: float) -> Config:
    """``cfg`` at one learning rate of its grid (the grid removed)."""
    return replace(cfg, optim=replace(cfg.optim, lr=float(lr), lr_grid=[]))


def candidate_dir(out: Path, lr: float) -> Path:
    return out / SEARCH_DIR / f"lr={lr:g}"


def check_grid(grid: list[float]) -> None:
    if any(not (isinstance(v, float) and math.isfinite(v) and v > 0) for v in grid):
        raise ValueError(f"optim.lr_grid must hold positive learning rates, got {grid}")
    if len(set(grid)) != len(grid):
        raise ValueError(f"optim.lr_grid has repeated values: {grid}")


def train_with_lr_search(cfg: Config, out: Path, progress: bool = True) -> dict[str, Any]:
    """Train every candidate of ``cfg.optim.lr_grid``, keep the best on validation, evaluate it
    on the test split; returns its metrics (see the module docstring)."""
    from sabma.pipeline.evaluate import evaluate_run
    from sabma.pipeline.train import check_reusable, run_or_reuse

    check_grid(cfg.optim.lr_grid)
    if (out / METRICS).exists():
        raise ValueError(f"{out} already holds a finished run; choose another --out")
    for lr in cfg.optim.lr_grid:  # before training: a stale candidate is an error, not a failed lr
        check_reusable(candidate_config(cfg, lr), candidate_dir(out, lr))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / CONFIG, dump_config(cfg))
    start = time.perf_counter()
    scores: dict[str, float | None] = {}
    for lr in cfg.optim.lr_grid:
        try:
            metrics = run_or_reuse(
                candidate_config(cfg, lr), candidate_dir(out, lr), progress, False
            )
        except (ValueError, FloatingPointError) as err:  # unstable or diverged at this lr
            log.warning("lr %g: %s", lr, str(err).splitlines()[0])
            scores[f"{lr:g}"] = None
            continue
        scores[f"{lr:g}"] = float(metrics["val"]["bma"]["nll"])
        log.info("lr %g: validation NLL %.4f", lr, scores[f"{lr:g}"])
    finished = {k: v for k, v in scores.items() if v is not None and math.isfinite(v)}
    if not finished:
        raise FloatingPointError(
            f"no learning rate of optim.lr_grid={cfg.optim.lr_grid} trained; lower the grid"
        )
    best = min(finished, key=lambda k: finished[k])
    chosen = candidate_dir(out, float(best))
    train_s = sum(read_metrics(candidate_dir(out, float(k)))["timing"]["train_s"] for k in finished)
    for name in COPIED:
        shutil.copy2(chosen / name, out / name)
    search = {"grid": scores, "chosen": float(best), "search_s": time.perf_counter() - start}
    atomic_write_json(out / SEARCH_RESULT, search)
    metrics = evaluate_run(out, progress=progress, temperature_scaling=cfg.eval.temperature_scaling)
    chosen_train_s = read_metrics(chosen)["timing"]["train_s"]
    metrics["lr"] = float(best)
    metrics["lr_search"] = {"grid": scores, "train_s": train_s}
    metrics["timing"]["train_s"] = chosen_train_s
    atomic_write_json(out / METRICS, metrics)
    return metrics
