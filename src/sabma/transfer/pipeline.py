"""One run of the transfer scheme, from configuration to a finished run directory.

A run directory holds ``config.yaml`` (resolved), ``train_log.jsonl``, ``posterior.safetensors``
with ``posterior.json`` (its metadata), ``reliability.png``, ``report.md`` and, written last,
``metrics.json`` — whose presence marks the run as finished.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sabma import distributed
from sabma.config import Config, dump_config, load_config
from sabma.data.inputs import Inputs
from sabma.data.tasks import Task, load_task
from sabma.device import amp_dtype, resolve_device
from sabma.methods import Method, get_method
from sabma.metrics import classification_metrics
from sabma.models import build_backbone
from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian
from sabma.posterior.summary import shape_summary
from sabma.predict.temperature import apply_temperature, fit_temperature
from sabma.runs.checkpoint import load_checkpoint
from sabma.runs.diagnostics import diagnostics
from sabma.runs.files import atomic_write_json, atomic_write_text, load_posterior, save_posterior
from sabma.runs.report import write_reliability_plot, write_report
from sabma.shift.evaluate import ShiftOptions, shift_metrics
from sabma.transfer.fit import Checkpointing, TrainData, fit
from sabma.transfer.init import initial_posterior
from sabma.transfer.predictive import RunPredictive
from sabma.transfer.priors import (
    PRIOR_KINDS,
    file_prior,
    head_mask,
    head_prior_variance,
    isotropic_prior,
)
from sabma.transfer.swag_prior import swag_prior
from sabma.transfer.validate import check_config, check_out_dir

log = logging.getLogger(__name__)

#: metrics.json sections written by other commands (evaluate --shift, sharpness)
CARRIED_SECTIONS = ("shift", "sharpness")


def build_posterior(cfg: Config, num_classes: int) -> tuple[GaussianPosterior, str]:
    """The backbone with a new head, and the posterior over its Bayesian subset (at w_pre).

    Seeded by ``cfg.seed``, so randomly initialised parts (a new head before the prior resets it,
    a backbone without pre-trained weights) are the same when a run is evaluated again."""
    torch.manual_seed(cfg.seed)
    backbone = build_backbone(cfg.model.backbone, num_classes, cfg.model.weights)
    rank = get_method(cfg.method.name).rank(cfg)
    if rank < 0:
        raise ValueError(f"method.rank must be >= 0, got {rank}")
    backbone.model.to(distributed.local_device(resolve_device(cfg.device)))
    posterior = GaussianPosterior(backbone.model, cfg.model.subset, rank=rank, head=backbone.head)
    posterior.autocast_dtype = amp_dtype(cfg.optim.amp)
    return posterior, backbone.head


def build_prior(
    cfg: Config, posterior: GaussianPosterior, head: str, data: TrainData
) -> LowRankGaussian:
    p = cfg.prior
    is_head = head_mask(posterior, head)
    w_pre = posterior.mean.detach().clone()
    alpha = head_prior_variance(p.head_var, posterior, head, data.x_train)
    if p.kind == "isotropic":
        return isotropic_prior(w_pre, is_head, p.norm_std, alpha)
    if not p.scale > 0:
        raise ValueError(f"prior.scale must be > 0, got {p.scale}")
    if p.kind == "swag":
        return scaled(swag_prior(posterior, data, cfg, is_head, alpha), p.scale, keep=is_head)
    if p.kind == "file":
        if not p.file_path:
            raise ValueError("prior.kind=file needs prior.file_path (a folder of PTL-layout files)")
        prior = file_prior(
            p.file_path, p.file_name, posterior.model, posterior, head, alpha, p.var_floor
        )
        return scaled(prior, p.scale, keep=is_head)
    raise ValueError(f"unknown prior kind {p.kind!r}; choose one of {PRIOR_KINDS}")


def scaled(prior: LowRankGaussian, scale: float, keep: Tensor | None = None) -> LowRankGaussian:
    """The prior with its covariance multiplied by ``scale`` (coordinates in ``keep`` unchanged)."""
    factor = torch.ones_like(prior.var) * scale
    if keep is not None:
        factor = torch.where(keep, torch.ones_like(factor), factor)
    return LowRankGaussian(
        prior.mean, prior.var * factor, prior.factor * factor.sqrt().unsqueeze(1)
    )


def _prepare_out_dir(out: Path) -> None:
    if (out / "metrics.json").exists():
        raise ValueError(f"{out} already holds a finished run; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    probe = out / ".write-test"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"output folder {out} is not writable ({err.strerror})") from None


CHECKPOINT = "checkpoint.safetensors"


def _resume_state(cfg: Config, out: Path) -> dict[str, Any] | None:
    """The checkpoint to resume ``out`` from (None: start from scratch), after checks."""
    if (out / "metrics.json").exists():
        raise ValueError(f"{out} holds a finished run; there is nothing to resume")
    saved = out / "config.yaml"
    if not saved.is_file():
        raise ValueError(f"{out} holds no run to resume (no config.yaml)")
    if saved.read_text() != dump_config(cfg):
        raise ValueError(
            f"the configuration differs from the one of the run in {out}; "
            "resume with the same --config/--set, or with none"
        )
    path = out / CHECKPOINT
    return load_checkpoint(path) if path.is_file() else None


def check_checkpoint(state: dict[str, Any], posterior: GaussianPosterior, path: Path) -> None:
    """Refuse a checkpoint written for another model, subset or rank."""
    saved = state["posterior"]
    if state.get("names") != posterior.names or any(
        tuple(saved[k].shape) != tuple(v.shape) for k, v in posterior.state_dict().items()
    ):
        raise ValueError(
            f"{path} was written for another model, subset or rank than this run's "
            f"({len(posterior.names)} tensors, d = {posterior.dim}, K = {posterior.rank})"
        )


def train_run(
    cfg: Config, out: Path, progress: bool = True, resume: bool = False, test: bool = True
) -> dict[str, Any]:
    """Train and evaluate one (method, seed) run into ``out``; returns its metrics.

    Training state is checkpointed to ``out/checkpoint.safetensors`` every
    ``optim.checkpoint_every`` steps; ``resume=True`` continues an interrupted run there (the
    same final metrics as an uninterrupted run, timings aside). The checkpoint is removed once
    ``metrics.json`` is written. With ``optim.lr_grid`` the learning rate is chosen on the
    validation split first (:mod:`sabma.transfer.search`). ``test=False`` evaluates the
    validation split only (a search candidate: its test metrics are never computed).
    """
    if cfg.optim.lr_grid:
        from sabma.transfer.search import train_with_lr_search

        check_config(cfg)
        return train_with_lr_search(cfg, out, progress)
    check_config(cfg)
    distributed.init(distributed.local_device(resolve_device(cfg.device)))
    main = distributed.is_main()
    state = _resume_state(cfg, out) if resume else None
    if not resume:
        check_out_dir(out)
    torch.manual_seed(cfg.seed)
    task = load_task(cfg, cfg.seed)
    data = TrainData(task.x_train, task.y_train, task.x_val, task.y_val)
    posterior, head = build_posterior(cfg, task.num_classes)
    if state is not None:
        check_checkpoint(state, posterior, out / CHECKPOINT)
    if not resume and main:  # every input checked: only now is anything written
        _prepare_out_dir(out)
        atomic_write_text(out / "config.yaml", dump_config(cfg))
        (out / "train_log.jsonl").write_text("")
    checkpoint = Checkpointing(
        out / CHECKPOINT,
        cfg.optim.checkpoint_every,
        state,
        elapsed_before=float(state["elapsed"]) if state is not None else 0.0,
        write=main,
    )
    prior = build_prior(cfg, posterior, head, data)
    method = get_method(cfg.method.name)  # one instance for the whole run (it may hold state)
    is_head = head_mask(posterior, head)
    start = initial_posterior(cfg, posterior, is_head, head, data, prior)
    method.initialise(posterior, start, is_head, cfg)
    fit(
        posterior,
        data,
        cfg,
        prior,
        method=method,
        log_path=out / "train_log.jsonl" if main else None,
        progress=progress and main,
        checkpoint=checkpoint,
    )
    train_s = checkpoint.elapsed()
    if not main:  # rank 0 evaluates and writes; the others are done
        distributed.barrier()
        return {}
    save_posterior(
        out / "posterior.safetensors",
        posterior,
        {
            "method": cfg.method.name,
            "backbone": cfg.model.backbone,
            "subset": cfg.model.subset,
            "head": head,
        },
        samples=method.samples(),
    )
    own = method.predictive(posterior, task.x_train, task.y_train, prior, head, cfg)
    metrics = _evaluate_and_write(
        cfg,
        posterior,
        task,
        out,
        train_s,
        cfg.eval.samples,
        cfg.eval.temperature_scaling,
        progress,
        weight_set=method.samples(),
        own_predictive=own,
        test=test,
    )
    (out / CHECKPOINT).unlink(missing_ok=True)  # metrics.json marks the run finished
    distributed.barrier()
    return metrics


def run_or_reuse(cfg: Config, out: Path, progress: bool, test: bool = True) -> dict[str, Any]:
    """Train into ``out``, or reuse a finished run there with the same configuration."""
    metrics_file = out / "metrics.json"
    if metrics_file.is_file():
        if (out / "config.yaml").read_text() != dump_config(cfg):
            raise ValueError(
                f"{out} holds a finished run with another configuration; choose another --out"
            )
        log.info("reusing the finished run in %s", out)
        return json.loads(metrics_file.read_text())
    if (out / CHECKPOINT).is_file() and (out / "config.yaml").is_file():
        log.info("resuming the interrupted run in %s", out)
        return train_run(cfg, out, progress=progress, resume=True, test=test)
    return train_run(cfg, out, progress=progress, test=test)


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
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml)")
    cfg = load_config(run_dir / "config.yaml")
    task = load_task(cfg, cfg.seed)
    posterior, head = build_posterior(cfg, task.num_classes)
    method = get_method(cfg.method.name)
    prior = None
    if method.evaluation_needs_prior(cfg):
        train = TrainData(task.x_train, task.y_train, task.x_val, task.y_val)
        prior = build_prior(cfg, posterior, head, train)
    meta = load_posterior(run_dir / "posterior.safetensors", posterior)
    return LoadedRun(cfg, task, posterior, head, method, prior, meta.get("weight_set"))


def evaluate_run(
    run_dir: Path,
    samples: int | None = None,
    temperature_scaling: bool | None = None,
    progress: bool = True,
    shift: ShiftOptions | None = None,
) -> dict[str, Any]:
    """Re-evaluate a finished run (e.g. with another S, temperature scaling, or on corrupted test
    sets: ``shift``); rewrites its metrics, report and plot. ``temperature_scaling=None``: as
    the run's configuration says (``eval.temperature_scaling``)."""
    run = load_run(run_dir)
    train_s, carried = 0.0, {}
    if (run_dir / "metrics.json").is_file():
        previous = json.loads((run_dir / "metrics.json").read_text())
        train_s = previous["timing"]["train_s"]
        # sections computed by other commands survive a re-evaluation that does not redo them
        carried = {k: previous[k] for k in CARRIED_SECTIONS if k in previous}
        if shift is not None:
            carried.pop("shift", None)
    task, posterior, cfg = run.task, run.posterior, run.cfg
    return _evaluate_and_write(
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
    )


def _evaluate_and_write(
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
) -> dict[str, Any]:
    """Evaluate the method's predictive (:class:`RunPredictive`) on the test and validation
    splits, and on corrupted test sets when ``shift`` is given; ``carried`` sections (from an
    earlier metrics.json) are kept. ``test=False``: the validation split only (no report)."""
    start = time.perf_counter()
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
        atomic_write_json(out / "metrics.json", metrics_val)
        return metrics_val
    test_lp = predictives(task.x_test, "test")
    metrics: dict[str, Any] = {
        "method": cfg.method.name,
        "seed": cfg.seed,
        "dataset": cfg.data.dataset,
        "shots": cfg.data.shots,
        "backbone": cfg.model.backbone,
        "subset": cfg.model.subset,
        "samples": predictive.samples_used,
        "dim": posterior.dim,
        "rank": posterior.rank,
        "test": {k: classification_metrics(v.exp(), task.y_test) for k, v in test_lp.items()},
        "val": {k: classification_metrics(v.exp(), task.y_val) for k, v in val.items()},
    }
    if not method.point:
        metrics["posterior"] = shape_summary(posterior.gaussian())
    metrics.update(carried or {})
    if shift is not None:
        on_shift = (
            predictive if shift.samples is None else replace(predictive, samples=shift.samples)
        )
        metrics["shift"] = shift_metrics(on_shift, task, cfg, shift, progress)
        metrics["shift"]["samples"] = on_shift.samples_used
    curves = {"BMA": (test_lp["bma"].exp(), task.y_test)}
    if not method.point:
        curves["posterior mean"] = (test_lp["mean"].exp(), task.y_test)
    if temperature_scaling:
        temperature = fit_temperature(val["bma"], task.y_val)
        scaled = apply_temperature(test_lp["bma"], temperature).exp()
        metrics["temperature"] = temperature
        metrics["test"]["bma_ts"] = classification_metrics(scaled, task.y_test)
        curves["BMA, temperature-scaled"] = (scaled, task.y_test)
        if not method.point:  # the posterior mean, scaled on its own validation predictive
            mean_temperature = fit_temperature(val["mean"], task.y_val)
            metrics["mean_temperature"] = mean_temperature
            metrics["test"]["mean_ts"] = classification_metrics(
                apply_temperature(test_lp["mean"], mean_temperature).exp(), task.y_test
            )
    metrics["timing"] = {"train_s": train_s, "eval_s": time.perf_counter() - start}
    metrics["fit"] = diagnostics(out, metrics)
    for line in metrics["fit"]["warnings"]:
        log.warning("%s: %s", out, line)
    write_reliability_plot(out / "reliability.png", curves)
    write_report(out / "report.md", metrics)
    atomic_write_json(out / "metrics.json", metrics)
    return metrics
