"""Training one run into its folder: the validation search of its learning rate and knob
(:mod:`sabma.pipeline.search`) where the configuration has grids, else one run
(:mod:`sabma.pipeline.single`); or reusing a finished run with the same configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sabma.config import Config
from sabma.ood.evaluate import OODOptions
from sabma.pipeline.checks import check_config, check_out_dir
from sabma.pipeline.evaluate import evaluate_run
from sabma.pipeline.grid import is_search
from sabma.pipeline.search import train_with_search
from sabma.pipeline.single import finished_or, train_single
from sabma.runs.lock import check_free, run_lock


def train_run(
    cfg: Config,
    out: Path,
    progress: bool = True,
    resume: bool = False,
    test: bool = True,
    ood: OODOptions | None = None,
) -> dict[str, Any]:
    """Train and evaluate one (method, seed) run into ``out``; returns its metrics.

    Training state is checkpointed to ``out/checkpoint.safetensors`` every
    ``optim.checkpoint_every`` steps; ``resume=True`` continues an interrupted run there (the
    same final metrics as an uninterrupted run, timings aside). The checkpoint is removed once
    ``metrics.json`` is written. With ``optim.lr_grid`` (or ``optim.knob_grid``) the learning
    rate (and the method's knob) is chosen on the validation split first
    (:mod:`sabma.pipeline.search`). ``test=False`` evaluates the validation split only (a
    search candidate: its test metrics are never computed). The process holds the folder's lock
    (:mod:`sabma.runs.lock`) throughout: a second writer is refused at once. ``ood``: the
    evaluation also scores the test split against these OOD sets.
    """
    check_config(cfg)
    if is_search(cfg):
        check_free(out)
        if not resume:
            check_out_dir(out)
        with run_lock(out):
            return train_with_search(cfg, out, progress, ood)
    return train_single(cfg, out, progress, resume, test, ood)


def run_or_reuse(
    cfg: Config, out: Path, progress: bool, test: bool = True, ood: OODOptions | None = None
) -> dict[str, Any]:
    """Train into ``out``, or reuse a finished run there with the same configuration; with
    ``ood``, a reused run without those OOD sets is evaluated on them."""
    metrics = finished_or(cfg, out, lambda resume: train_run(cfg, out, progress, resume, test, ood))
    if ood is not None and not has_ood_sets(metrics, ood):
        metrics = evaluate_run(out, progress=progress, ood=ood)
    return metrics


def has_ood_sets(metrics: dict[str, Any], ood: OODOptions) -> bool:
    """Whether a run's metrics hold an OOD section of these sets, sizes and samples."""
    section = metrics.get("ood")
    if not section or list(section.get("sets", {})) != list(ood.specs):
        return False
    if ood.samples is not None and section.get("samples") != ood.samples:
        return False
    return not ood.size or all(s["size"] <= ood.size for s in section["sets"].values())
