"""A run's ``"shift"`` section: its predictive (and a posterior's mean) on corrupted test sets
(:mod:`sabma.shift.evaluate`), resumable through ``shift.partial.json``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from sabma.config import Config
from sabma.data.tasks import Task
from sabma.pipeline.predictive import RunPredictive
from sabma.runs.folder import SHIFT_PROGRESS
from sabma.runs.progress import SetProgress
from sabma.shift.evaluate import (
    ShiftOptions,
    ShiftPredictive,
    corruptions_for,
    same_settings,
    shift_metrics,
)


def shift_section(
    predictive: RunPredictive,
    task: Task,
    cfg: Config,
    options: ShiftOptions,
    progress: bool,
    temperatures: dict[str, float | None],
    carried: dict[str, Any] | None,
    out: Path,
) -> dict[str, Any]:
    """The run's shift section: the method's predictive on the corrupted sets and, for a
    posterior (not a point estimate), its mean as ``"at_mean"``. ``options.mean_only``: the
    mean alone, added to the ``carried`` section of the same settings."""
    point = predictive.method.point
    on_shift = (
        predictive if options.samples is None else replace(predictive, samples=options.samples)
    )
    wanted: dict[str, ShiftPredictive] = {}
    previous = (carried or {}).get("shift")
    if options.mean_only:
        if point:
            raise ValueError(
                f"--shift-mean-only: method {cfg.method.name!r} is a point estimate; its "
                "predictive is its mean (use --shift)"
            )
        if previous is None:
            raise ValueError("--shift-mean-only adds to a shift section; run --shift first")
        planned = {
            "corruptions": list(corruptions_for(task.kind, options.corruptions)),
            "severities": list(options.severities),
            "size": options.size or len(task.y_test),
        }
        if not same_settings(previous, planned):
            raise ValueError(
                "--shift-mean-only: the run's shift section measured other corrupted sets "
                f"({previous['corruptions']}, severities {previous['severities']}, "
                f"{previous['size']} images); give the same --corruptions, --severities and "
                "--shift-size"
            )
    else:
        wanted["bma"] = (lambda x, g: on_shift(x, g), temperatures["bma"])
    if not point:
        wanted["mean"] = (lambda x, g: predictive.mean(x), temperatures["mean"])
    resume = SetProgress(out / SHIFT_PROGRESS, predictive.identity(out, options.samples))
    measured = shift_metrics(wanted, task, cfg, options, progress, resume)
    if options.mean_only:
        assert previous is not None
        section = dict(previous)
    else:
        section = measured["bma"]
        section["samples"] = on_shift.samples_used
    if "mean" in measured:
        section["at_mean"] = {k: measured["mean"][k] for k in ("clean", "per_corruption", "mean")}
    return section
