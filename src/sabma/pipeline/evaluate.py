"""Evaluating a trained run: its predictive on the test and validation splits (and under shift),
temperature scaling, the posterior's shape, the report; and loading a finished run again."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sabma.config import Config, load_config
from sabma.data.tasks import Task, load_task
from sabma.methods import Method, get_method
from sabma.metrics import classification_metrics
from sabma.models.inputs import Inputs
from sabma.ood.evaluate import OODOptions, load_sets
from sabma.pipeline.build import build_posterior, build_prior
from sabma.pipeline.grid import resolved_config
from sabma.pipeline.predictive import LONG_SAMPLES, RunPredictive, warn_if_long
from sabma.pipeline.shifted import shift_section
from sabma.pipeline.uncertainty import ood_section, selective_section
from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian
from sabma.posterior.summary import shape_summary
from sabma.predict.temperature import apply_temperature, fit_temperature
from sabma.runs.diagnostics import diagnostics
from sabma.runs.files import atomic_write_json, load_posterior
from sabma.runs.folder import (
    CARRIED_SECTIONS,
    CONFIG,
    METRICS,
    OOD_PROGRESS,
    POSTERIOR,
    RELIABILITY,
    REPORT,
    SHIFT_PROGRESS,
    read_metrics,
)
from sabma.runs.lock import run_lock
from sabma.runs.report import write_reliability_plot, write_report
from sabma.shift.evaluate import (
    ShiftOptions,
)

log = logging.getLogger(__name__)


@dataclass
class LoadedRun:
    """A finished run, loaded: its configuration, task, trained posterior and method."""

    cfg: Config
    task: Task
    posterior: GaussianPosterior
    head: str
    method: Method
    prior: LowRankGaussian | None
    weight_set: Tensor | None


def load_run(run_dir: Path) -> LoadedRun:
    """Rebuild a run from its directory (the prior only where the method's predictive needs it)."""
    if not (run_dir / CONFIG).is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml)")
    cfg = resolved_config(load_config(run_dir / CONFIG), run_dir)
    task = load_task(cfg, cfg.seed)
    posterior, head = build_posterior(cfg, task.num_classes)
    method = get_method(cfg.method.name)
    prior = None
    if method.evaluation_needs_prior(cfg):
        train = task.train_data()
        prior = build_prior(cfg, posterior, head, train)
    meta = load_posterior(run_dir / POSTERIOR, posterior)
    return LoadedRun(cfg, task, posterior, head, method, prior, meta.get("weight_set"))


def evaluate_run(
    run_dir: Path,
    samples: int | None = None,
    temperature_scaling: bool | None = None,
    progress: bool = True,
    shift: ShiftOptions | None = None,
    ood: OODOptions | None = None,
) -> dict[str, Any]:
    """Re-evaluate a finished run (e.g. with another S, temperature scaling, or on corrupted test
    sets: ``shift``); rewrites its metrics, report and plot. ``temperature_scaling=None``: as
    the run's configuration says (``eval.temperature_scaling``). Holds the run's lock."""
    with run_lock(run_dir):
        run = load_run(run_dir)
        train_s, carried = 0.0, {}
        previous = _previous_metrics(run_dir)
        if previous is not None:
            train_s = previous["timing"]["train_s"]
            # sections computed by other commands survive a re-evaluation that does not redo them
            carried = {k: previous[k] for k in CARRIED_SECTIONS if k in previous}
            if shift is not None and not shift.mean_only:
                carried.pop("shift", None)
            if ood is not None:
                carried.pop("ood", None)
            if shift is not None and shift.mean_only and "shift" in previous:
                scaled = "ts_nll" in previous["shift"]["clean"]  # the mean is scaled like the BMA
                if temperature_scaling is not None and temperature_scaling != scaled:
                    raise ValueError(
                        "--shift-mean-only: the run's shift section was measured "
                        f"{'with' if scaled else 'without'} temperature scaling; drop "
                        "--temperature-scaling/--no-temperature-scaling"
                    )
                temperature_scaling = scaled
        task, posterior, cfg = run.task, run.posterior, run.cfg
        if samples is not None and samples > LONG_SAMPLES:
            warn_if_long(posterior, task, samples, cfg.eval.batch_size)
        return evaluate_and_write(
            cfg,
            posterior,
            task,
            run_dir,
            train_s,
            samples or cfg.eval.samples,
            cfg.eval.temperature_scaling if temperature_scaling is None else temperature_scaling,
            progress,
            weight_set=run.weight_set,
            own_predictive=run.method.predictive(
                posterior, task.x_train, task.y_train, run.prior, run.head, cfg
            ),
            shift=shift,
            carried=carried,
            ood=ood,
        )


def _previous_metrics(run_dir: Path) -> dict[str, Any] | None:
    """The run's metrics.json, or None when it has none or it is damaged (then it is rebuilt
    from the posterior; the sections other commands added are lost, and a warning says so)."""
    if not (run_dir / METRICS).is_file():
        return None
    try:
        previous = read_metrics(run_dir)
        float(previous["timing"]["train_s"])
    except (ValueError, KeyError, TypeError) as err:
        log.warning("%s; rebuilding it (its shift, sharpness and search sections are lost)", err)
        return None
    return previous


def evaluate_and_write(
    cfg: Config,
    posterior: GaussianPosterior,
    task: Task,
    out: Path,
    train_s: float,
    samples: int,
    temperature_scaling: bool,
    progress: bool,
    weight_set: Tensor | None = None,
    own_predictive: Callable[[Inputs], Tensor] | None = None,
    shift: ShiftOptions | None = None,
    carried: dict[str, Any] | None = None,
    test: bool = True,
    ood: OODOptions | None = None,
) -> dict[str, Any]:
    """Evaluate the method's predictive (:class:`RunPredictive`) on the test and validation
    splits, and on corrupted test sets when ``shift`` is given; ``carried`` sections (from an
    earlier metrics.json) are kept. ``test=False``: the validation split only (no report).
    Every evaluation adds selective prediction on the test split; ``ood`` adds OOD detection
    (its sets are loaded and checked first: a set that cannot be used writes nothing)."""
    start = time.perf_counter()
    sets = load_sets(ood, cfg, task) if ood is not None and test else None
    method = get_method(cfg.method.name)
    predictive = RunPredictive(cfg, posterior, method, samples, weight_set, own_predictive)
    generator = torch.Generator().manual_seed(cfg.seed + 3)

    def predictives(x: Inputs, name: str) -> dict[str, Tensor]:
        mean = predictive.mean(x)
        if method.point:
            return {"bma": mean, "mean": mean}
        return {"bma": predictive(x, generator, progress, f"BMA {name}"), "mean": mean}

    val = predictives(task.x_val, "val")
    if not test:  # a search candidate: judged on validation only
        metrics_val = {
            "method": cfg.method.name,
            "seed": cfg.seed,
            "lr": cfg.optim.lr,
            "val": {k: classification_metrics(v.exp(), task.y_val) for k, v in val.items()},
            "timing": {"train_s": train_s, "eval_s": time.perf_counter() - start},
        }
        atomic_write_json(out / METRICS, metrics_val)
        return metrics_val
    test_lp = predictives(task.x_test, "test")
    metrics: dict[str, Any] = {
        **_header(cfg, predictive),
        "test": {k: classification_metrics(v.exp(), task.y_test) for k, v in test_lp.items()},
        "val": {k: classification_metrics(v.exp(), task.y_val) for k, v in val.items()},
    }
    if not method.point:
        metrics["posterior"] = shape_summary(posterior.gaussian())
    metrics.update(carried or {})
    temperatures = _temperatures(val, task.y_val, temperature_scaling, method.point)
    kept = {k: v for k, v in test_lp.items() if k == "bma" or not method.point}
    metrics["selective"] = selective_section(kept, task.y_test, temperatures, out)
    if ood is not None and sets is not None:
        metrics["ood"] = ood_section(predictive, task, cfg, ood, sets, temperatures, out, progress)
    if shift is not None:
        metrics["shift"] = shift_section(
            predictive, task, cfg, shift, progress, temperatures, carried, out
        )
    curves = _scaled_test(metrics, test_lp, task.y_test, temperatures, method.point)
    metrics["timing"] = {"train_s": train_s, "eval_s": time.perf_counter() - start}
    metrics["fit"] = diagnostics(out, metrics, task.num_classes, method.less_noise)
    for line in metrics["fit"]["warnings"]:
        log.warning("%s: %s", out, line)
    write_reliability_plot(out / RELIABILITY, curves)
    write_report(out / REPORT, metrics)
    atomic_write_json(out / METRICS, metrics)
    # the finished sets of a shift or OOD evaluation are in metrics.json now
    for asked, partial in ((shift, SHIFT_PROGRESS), (ood, OOD_PROGRESS)):
        if asked is not None:
            (out / partial).unlink(missing_ok=True)
    return metrics


def _header(cfg: Config, predictive: RunPredictive) -> dict[str, Any]:
    """What a run's metrics.json says of the run before its figures."""
    return {
        "method": cfg.method.name,
        "seed": cfg.seed,
        "dataset": cfg.data.dataset,
        "shots": cfg.data.shots,
        "backbone": cfg.model.backbone,
        "subset": cfg.model.subset,
        "samples": predictive.samples_used,
        "dim": predictive.posterior.dim,
        "rank": predictive.posterior.rank,
    }


def _temperatures(
    val: dict[str, Tensor], labels: Tensor, scaling: bool, point: bool
) -> dict[str, float | None]:
    """The temperatures fitted on validation: the predictive's and (a posterior) its mean's."""
    return {
        "bma": fit_temperature(val["bma"], labels) if scaling else None,
        "mean": fit_temperature(val["mean"], labels) if scaling and not point else None,
    }


def _scaled_test(
    metrics: dict[str, Any],
    test_lp: dict[str, Tensor],
    labels: Tensor,
    temperatures: dict[str, float | None],
    point: bool,
) -> dict[str, tuple[Tensor, Tensor]]:
    """Add the temperature-scaled test metrics to ``metrics``; the reliability diagram's
    curves."""
    curves = {"BMA": (test_lp["bma"].exp(), labels)}
    if not point:
        curves["posterior mean"] = (test_lp["mean"].exp(), labels)
    temperature, mean_temperature = temperatures["bma"], temperatures["mean"]
    if temperature is not None:
        scaled = apply_temperature(test_lp["bma"], temperature).exp()
        metrics["temperature"] = temperature
        metrics["test"]["bma_ts"] = classification_metrics(scaled, labels)
        curves["BMA, temperature-scaled"] = (scaled, labels)
        if mean_temperature is not None:
            metrics["mean_temperature"] = mean_temperature
            metrics["test"]["mean_ts"] = classification_metrics(
                apply_temperature(test_lp["mean"], mean_temperature).exp(), labels
            )
    return curves
