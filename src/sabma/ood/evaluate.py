"""Out-of-distribution detection of a run's predictives: uncertainty scores on the test split
and on each OOD set (:mod:`sabma.ood.sets`), and the AUROC, AUPR and FPR95 that separate them
(:mod:`sabma.metrics.ood`).

Scores (:func:`~sabma.predict.summary.uncertainty_scores`): negative max-probability, predictive
entropy, energy of the averaged logits, and — for predictives with draws — mutual information.
Each is reported raw and, where the run fitted a temperature on its clean validation split, at
that temperature (``ts``). Every set is scored with the same seeds (as the shift evaluation
does), so a set's figures do not depend on the sets before it, and the evaluation resumes: each
finished set's scores are saved as it completes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sabma.config import Config
from sabma.data.tasks import Task
from sabma.device import cuda_devices_in_use
from sabma.metrics.ood import ood_detection, roc_points
from sabma.models.inputs import Inputs
from sabma.ood.sets import OODSet, load_ood_set
from sabma.predict.bma import check_samples
from sabma.predict.summary import Predictions, uncertainty_scores
from sabma.runs.progress import SetProgress

#: a predictive for the scores: fn(x, generator) → its figures (computed at its temperature),
#: that temperature (None: raw only), and whether it has draws (the mutual information)
OODPredictive = tuple[Callable[[Inputs, torch.Generator], Predictions], float | None, bool]


@dataclass
class OODOptions:
    #: the OOD sets: presets (near, far, …) or any SPEC :func:`load_ood_set` reads
    specs: tuple[str, ...] = ("near", "far")
    size: int = 0  # items per OOD set (0: as many as the run's test split)
    samples: int | None = None  # BMA samples S for the scores (None: the run's)

    def __post_init__(self) -> None:
        if not self.specs:
            raise ValueError("name at least one OOD set (--ood near, --ood far, a file …)")
        if len(set(self.specs)) != len(self.specs):
            raise ValueError(f"an OOD set is named twice: {list(self.specs)}")
        if self.size < 0:
            raise ValueError(f"the OOD set size must be >= 0, got {self.size}")
        if self.samples is not None:
            check_samples(self.samples, "the OOD BMA samples")


def load_sets(options: OODOptions, cfg: Config, task: Task) -> list[OODSet]:
    """Every OOD set, loaded and checked before anything is measured or written."""
    return [load_ood_set(spec, cfg, task, options.size) for spec in options.specs]


def ood_scores(
    predictives: dict[str, OODPredictive],
    task: Task,
    cfg: Config,
    sets: list[OODSet],
    progress: bool = False,
    resume: SetProgress | None = None,
) -> dict[str, dict[str, dict[str, dict[str, list[float]]]]]:
    """{set ("test" or an OOD set's name): {predictive: {"raw"/"ts": {score: per-input}}}}."""
    seed = cfg.seed + 11
    settings = {
        "sets": {s.name: [s.source, len(s)] for s in sets},
        "test_size": len(task.y_test),
        "predictives": {k: temperature for k, (_, temperature, _) in predictives.items()},
    }
    done = resume.start(settings) if resume is not None else {}

    def scored(x: Inputs) -> dict[str, dict[str, dict[str, list[float]]]]:
        out = {}
        for name, (fn, temperature, draws) in predictives.items():
            with torch.random.fork_rng(devices=cuda_devices_in_use()):
                torch.manual_seed(seed + 1)
                figures = fn(x, torch.Generator().manual_seed(seed))
            kinds = {"raw": uncertainty_scores(figures, None, draws)}
            if temperature is not None:
                kinds["ts"] = uncertainty_scores(figures, temperature, draws)
            out[name] = {
                k: {score: v.double().tolist() for score, v in scores.items()}
                for k, scores in kinds.items()
            }
        return out

    todo = [("test", lambda: task.x_test)] + [(s.name, _prepared(task, s)) for s in sets]
    for key, inputs_of in tqdm(todo, desc="OOD", disable=not progress, leave=False):
        if key not in done:
            done[key] = scored(inputs_of())
            if resume is not None:
                resume.save(settings, done)
    return done


def _prepared(task: Task, ood: OODSet) -> Callable[[], Inputs]:
    return lambda: task.prepare(ood.raw)


def detection_metrics(
    scores: dict[str, dict[str, dict[str, dict[str, list[float]]]]], predictive: str
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """{"raw"/"ts": {OOD set: {score: {auroc, aupr_in, aupr_out, fpr95}}}} of one predictive."""
    test = scores["test"][predictive]
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for kind, by_score in test.items():
        out[kind] = {
            name: {
                score: ood_detection(np.array(values), np.array(found[predictive][kind][score]))
                for score, values in by_score.items()
            }
            for name, found in scores.items()
            if name != "test"
        }
    return out


def roc_curves(
    scores: dict[str, dict[str, dict[str, dict[str, list[float]]]]], predictive: str
) -> dict[str, dict[str, tuple[Any, Any]]]:
    """{OOD set: {score: (FPR, TPR)}} of one predictive's raw scores (for the ROC plot)."""
    test = scores["test"][predictive]["raw"]
    return {
        name: {
            score: roc_points(np.array(values), np.array(found[predictive]["raw"][score]))
            for score, values in test.items()
        }
        for name, found in scores.items()
        if name != "test"
    }
