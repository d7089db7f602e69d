"""Metrics of a predictive on corrupted versions of a task's test split.

Images get the ImageNet-C families (:mod:`sabma.shift.corruptions`, cached on disk), texts the
character and word corruptions (:mod:`sabma.shift.text`); either way the corrupted raw test
items are prepared by the task's own ``prepare`` (resizing, tokenizing) like the clean ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sabma.config import Config
from sabma.data.tasks import Task
from sabma.device import cuda_devices_in_use
from sabma.metrics import classification_metrics
from sabma.models import inputs
from sabma.models.inputs import Inputs
from sabma.predict.bma import check_samples
from sabma.predict.temperature import apply_temperature
from sabma.runs.progress import SetProgress
from sabma.shift.cache import corrupted_test_set
from sabma.shift.corruptions import (
    ALL_CORRUPTIONS,
    DEFAULT_CORRUPTIONS,
    SEVERITIES,
    check_severities,
)
from sabma.shift.text import TEXT_CORRUPTIONS, corrupt_texts

log = logging.getLogger(__name__)

METRIC_KEYS = ("acc", "nll", "ece", "brier")
#: reported again after temperature scaling (``ts_nll``, ``ts_ece``) when a temperature is given
TS_KEYS = ("nll", "ece")


#: per kind of data: (every corruption, the default ones)
CORRUPTIONS = {
    "image": (ALL_CORRUPTIONS, DEFAULT_CORRUPTIONS),
    "text": (tuple(TEXT_CORRUPTIONS), tuple(TEXT_CORRUPTIONS)),
}


def corruptions_for(kind: str, names: tuple[str, ...] | None) -> tuple[str, ...]:
    """The corruptions to run on ``kind`` data: ``names`` (checked), ``("all",)`` or the
    defaults (None)."""
    every, default = CORRUPTIONS[kind]
    if names is None:
        return default
    if names == ("all",):
        return every
    unknown = [n for n in names if n not in every]
    if unknown:
        raise ValueError(
            f"unknown {kind} corruption(s) {unknown}; choose from {list(every)} or 'all'"
        )
    return names


#: a predictive on the shifted sets: ``fn(x, generator)`` → log-probabilities, and the
#: temperature fitted for it on the clean validation split (None: no temperature scaling)
ShiftPredictive = tuple[Callable[[Inputs, torch.Generator], Tensor], float | None]


@dataclass
class ShiftOptions:
    #: corruption names, ("all",), or None: the defaults for the run's kind of data
    corruptions: tuple[str, ...] | None = None
    severities: tuple[int, ...] = SEVERITIES
    size: int = 0  # the first `size` test images (0: the whole test split)
    samples: int | None = None  # BMA samples S on the corrupted sets (None: the run's)
    seed: int = 0  # seed of the corruptions' randomness (the same for every method)
    cache_dir: Path | None = None
    #: measure the posterior mean only, and add it to the run's shift section of these settings
    mean_only: bool = False

    def __post_init__(self) -> None:
        known = {n for every, _ in CORRUPTIONS.values() for n in every} | {"all"}
        unknown = [n for n in self.corruptions or () if n not in known]
        if unknown:
            raise ValueError(
                f"unknown corruption(s) {unknown}; images: {list(ALL_CORRUPTIONS)}; "
                f"texts: {list(TEXT_CORRUPTIONS)}; or 'all'"
            )
        check_severities(self.severities)
        if self.size < 0:
            raise ValueError(f"the shift test size must be >= 0, got {self.size}")
        if self.samples is not None:
            check_samples(self.samples, "the shift BMA samples")


def shift_metrics(
    predictives: dict[str, ShiftPredictive],
    task: Task,
    cfg: Config,
    options: ShiftOptions,
    progress: bool = False,
    resume: SetProgress | None = None,
) -> dict[str, dict[str, Any]]:
    """For each named predictive: {"corruptions", "severities", "size", "clean",
    "per_corruption": {name: {severity: metrics}}, "mean": {severity: metrics averaged over the
    corruptions}}.

    Each corrupted set is built once and given to every predictive. Every set is evaluated
    with the same seeds (the predictive's generator, and the global one that e.g. dropout masks
    draw from, forked so the caller's state is untouched): the sets differ only by their
    inputs, and a set's figures do not depend on which sets came before. That makes the
    evaluation resumable: with ``resume``, each finished set is saved as it completes and a
    later call with the same settings starts from the sets already done. With a temperature
    (fitted on the clean validation split) every set also gets ``ts_nll`` and ``ts_ece``: the
    calibrated log-likelihood, which separates methods that differ in their confidence only."""
    corruptions = corruptions_for(task.kind, options.corruptions)
    n = options.size or len(task.y_test)
    clean, labels = task.x_test_raw[:n], task.y_test[:n]
    seed = cfg.seed + 5

    def evaluate(x: Inputs) -> dict[str, dict[str, float]]:
        return {
            name: _set_metrics(predictive, temperature, x, labels, seed)
            for name, (predictive, temperature) in predictives.items()
        }

    def prepared(name: str, severity: int) -> Inputs:
        return task.prepare(_corrupted(task, cfg, options, clean, name, severity))

    settings = {
        "corruptions": list(corruptions),
        "severities": list(options.severities),
        "size": n,
        "seed": options.seed,
        "predictives": {k: temperature for k, (_, temperature) in predictives.items()},
    }
    done = resume.start(settings) if resume is not None else {}

    def measured(key: str, x: Callable[..., Inputs], *args: Any) -> dict[str, dict[str, float]]:
        """The figures of set ``key`` (its inputs: ``x(*args)``, built only when measured)."""
        if key not in done:
            done[key] = evaluate(x(*args))
            if resume is not None:
                resume.save(settings, done)
        return done[key]

    results: dict[str, dict[str, Any]] = {
        name: {
            **{k: settings[k] for k in ("corruptions", "severities", "size")},
            "per_corruption": {},
        }
        for name in predictives
    }
    for name, metrics in measured("clean", lambda: inputs.take(task.x_test, slice(0, n))).items():
        results[name]["clean"] = metrics
    pairs = [(c, s) for c in corruptions for s in options.severities]
    for corruption, severity in tqdm(pairs, desc="shift", disable=not progress, leave=False):
        key = f"{corruption}/{severity}"
        for name, metrics in measured(key, prepared, corruption, severity).items():
            results[name]["per_corruption"].setdefault(corruption, {})[str(severity)] = metrics
    for name, result in results.items():
        keys = (*METRIC_KEYS, *(f"ts_{k}" for k in TS_KEYS if predictives[name][1] is not None))
        result["mean"] = _severity_means(result["per_corruption"], options.severities, keys)
    return results


def _set_metrics(
    predictive: Callable[[Inputs, torch.Generator], Tensor],
    temperature: float | None,
    x: Inputs,
    labels: Tensor,
    seed: int,
) -> dict[str, float]:
    """One predictive's figures on one set, under fixed seeds (its generator's, and the global
    one's, forked); with the clean validation split's temperature, also ``ts_nll``/``ts_ece``."""
    with torch.random.fork_rng(devices=cuda_devices_in_use()):
        torch.manual_seed(seed + 1)  # not the generator's seed: independent streams
        log_probs = predictive(x, torch.Generator().manual_seed(seed))
    metrics = classification_metrics(log_probs.exp(), labels)
    if temperature is not None:  # the clean validation split's T, applied unchanged
        scaled = classification_metrics(apply_temperature(log_probs, temperature).exp(), labels)
        metrics.update({f"ts_{k}": v for k, v in scaled.items() if k in TS_KEYS})
    return metrics


def _corrupted(
    task: Task, cfg: Config, options: ShiftOptions, clean: Any, name: str, severity: int
) -> Any:
    """The clean test inputs under one corruption at one severity (raw: before ``prepare``)."""
    if task.kind == "text":
        return corrupt_texts(list(clean), name, severity, options.seed)
    return corrupted_test_set(
        cfg.data.dataset,
        clean,
        name,
        severity,
        options.seed,
        cfg.data.resolution,
        options.cache_dir,
    )


def _severity_means(
    per_corruption: dict[str, dict[str, dict[str, float]]],
    severities: Sequence[int],
    keys: Sequence[str],
) -> dict[str, dict[str, float]]:
    """Per severity, each figure averaged over the corruptions."""
    return {
        str(s): {
            k: sum(per_corruption[c][str(s)][k] for c in per_corruption) / len(per_corruption)
            for k in keys
        }
        for s in severities
    }


def corrupted_sets(section: dict[str, Any]) -> tuple[tuple[str, ...], int]:
    """What a shift section's per-severity means average over: its corruptions and test size."""
    return tuple(section["corruptions"]), int(section["size"])


def same_settings(section: dict[str, Any], other: dict[str, Any]) -> bool:
    """Whether two shift sections measured the same corrupted sets at the same severities."""
    same_sets = corrupted_sets(section) == corrupted_sets(other)
    return same_sets and list(section["severities"]) == list(other["severities"])
