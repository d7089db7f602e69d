"""Metrics of a predictive on corrupted versions of a task's test split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sabma.config import Config
from sabma.data.preprocess import preprocess_images
from sabma.data.tasks import Task
from sabma.metrics import classification_metrics
from sabma.shift.cache import corrupted_test_set
from sabma.shift.corruptions import (
    DEFAULT_CORRUPTIONS,
    SEVERITIES,
    check_corruptions,
    check_severities,
)

METRIC_KEYS = ("acc", "nll", "ece", "brier")


@dataclass
class ShiftOptions:
    corruptions: tuple[str, ...] = DEFAULT_CORRUPTIONS
    severities: tuple[int, ...] = SEVERITIES
    size: int = 0  # the first `size` test images (0: the whole test split)
    samples: int | None = None  # BMA samples S on the corrupted sets (None: the run's)
    seed: int = 0  # seed of the corruptions' randomness (the same for every method)
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        check_corruptions(self.corruptions)
        check_severities(self.severities)
        if self.size < 0:
            raise ValueError(f"the shift test size must be >= 0, got {self.size}")
        if self.samples is not None and self.samples < 1:
            raise ValueError(f"the shift BMA samples must be >= 1, got {self.samples}")


def shift_metrics(
    predictive: Callable[..., Tensor],
    task: Task,
    cfg: Config,
    options: ShiftOptions,
    progress: bool = False,
) -> dict[str, Any]:
    """{"corruptions", "severities", "size", "clean", "per_corruption": {name: {severity:
    metrics}}, "mean": {severity: metrics averaged over the corruptions}}.

    ``predictive(x, generator)`` returns log-probabilities; its draws are seeded the same way for
    every corrupted set, so the sets differ only by their images."""
    n = options.size or len(task.y_test)
    clean, labels = task.x_test_raw[:n], task.y_test[:n]

    def evaluate(x: Tensor) -> dict[str, float]:
        generator = torch.Generator().manual_seed(cfg.seed + 5)
        return classification_metrics(predictive(x, generator).exp(), labels)

    result: dict[str, Any] = {
        "corruptions": list(options.corruptions),
        "severities": list(options.severities),
        "size": n,
        "clean": evaluate(task.x_test[:n]),
        "per_corruption": {},
    }
    pairs = [(c, s) for c in options.corruptions for s in options.severities]
    for name, severity in tqdm(pairs, desc="shift", disable=not progress, leave=False):
        images = corrupted_test_set(
            cfg.data.dataset,
            clean,
            name,
            severity,
            options.seed,
            cfg.data.resolution,
            options.cache_dir,
        )
        x = preprocess_images(images, cfg.data.resolution)
        result["per_corruption"].setdefault(name, {})[str(severity)] = evaluate(x)
    result["mean"] = {
        str(s): {
            k: sum(result["per_corruption"][c][str(s)][k] for c in options.corruptions)
            / len(options.corruptions)
            for k in METRIC_KEYS
        }
        for s in options.severities
    }
    return result
