"""A run's uncertainty beyond calibration: selective prediction on its test split (every
evaluation) and out-of-distribution detection (``evaluate --ood``), for its predictive and,
for a posterior, its mean — raw and at the temperatures fitted on validation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import Tensor

from sabma.config import Config
from sabma.data.tasks import Task
from sabma.metrics.selective import risk_coverage, selective_metrics
from sabma.ood.evaluate import (
    OODOptions,
    OODPredictive,
    detection_metrics,
    ood_scores,
    roc_curves,
)
from sabma.ood.sets import OODSet
from sabma.pipeline.predictive import RunPredictive
from sabma.predict.summary import entropy
from sabma.predict.temperature import apply_temperature
from sabma.runs.folder import OOD_FIGURE, OOD_PROGRESS, RISK_COVERAGE
from sabma.runs.progress import SetProgress
from sabma.runs.uncertainty_report import write_risk_coverage_plot, write_roc_plot

#: predictive names in metrics.json: the method's predictive, the posterior's mean
NAMES = {"bma": "BMA", "mean": "posterior mean"}


def selective_section(
    test_lp: dict[str, Tensor],
    labels: Tensor,
    temperatures: dict[str, float | None],
    out: Path | None = None,
) -> dict[str, Any]:
    """{predictive: {"raw"/"ts": {"msp"/"entropy": AURC, E-AURC, accuracy at coverages}}},
    confidence = max-probability or −entropy; with ``out``, ``risk_coverage.png`` (raw)."""
    section: dict[str, Any] = {}
    curves = {}
    for name, log_probs in test_lp.items():
        correct = log_probs.argmax(-1) == labels
        kinds = {"raw": log_probs}
        temperature = temperatures.get(name)
        if temperature is not None:
            kinds["ts"] = apply_temperature(log_probs, temperature)
        section[name] = {}
        for kind, lp in kinds.items():
            confidences = {"msp": lp.max(-1).values.exp(), "entropy": -entropy(lp)}
            section[name][kind] = {c: selective_metrics(v, correct) for c, v in confidences.items()}
            if kind == "raw":
                for c, v in confidences.items():
                    label = f"{NAMES[name]}, {'max-prob.' if c == 'msp' else '−entropy'}"
                    curves[label] = risk_coverage(v, correct)
    if out is not None:
        write_risk_coverage_plot(out / RISK_COVERAGE, curves)
    return section


def ood_section(
    predictive: RunPredictive,
    task: Task,
    cfg: Config,
    options: OODOptions,
    sets: list[OODSet],
    temperatures: dict[str, float | None],
    out: Path,
    progress: bool,
) -> dict[str, Any]:
    """The run's ``"ood"`` section (resumable through ``ood.partial.json``; the caller removes
    it once metrics.json holds the section) and ``ood.png`` (the predictive's raw scores)."""
    on_ood = predictive if options.samples is None else replace(predictive, samples=options.samples)
    draws = not predictive.method.point and predictive.own is None
    wanted: dict[str, OODPredictive] = {
        "bma": (
            lambda x, g: on_ood.summary(x, temperatures.get("bma"), g, progress, "OOD BMA"),
            temperatures.get("bma"),
            draws,
        )
    }
    if not predictive.method.point:
        wanted["mean"] = (
            lambda x, g: predictive.summary(x, temperatures.get("mean"), at_mean=True),
            temperatures.get("mean"),
            False,
        )
    resume = SetProgress(out / OOD_PROGRESS, predictive.identity(out, options.samples))
    scores = ood_scores(wanted, task, cfg, sets, progress, resume)
    section: dict[str, Any] = {
        "test_size": len(task.y_test),
        "samples": on_ood.samples_used,
        "sets": {s.name: {"source": s.source, "size": len(s)} for s in sets},
        "bma": detection_metrics(scores, "bma"),
    }
    if "mean" in wanted:
        section["at_mean"] = detection_metrics(scores, "mean")
    write_roc_plot(out / OOD_FIGURE, roc_curves(scores, "bma"))
    return section
