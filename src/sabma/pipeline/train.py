"""Training one run into its folder (:mod:`sabma.runs.folder`): checks, prior, initial
posterior, the shared loop with checkpoints (resumable), then evaluation; or reusing a finished
run with the same configuration."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from sabma import distributed
from sabma.config import Config, dump_config
from sabma.data.tasks import load_task
from sabma.device import resolve_device
from sabma.methods import get_method
from sabma.ood.evaluate import OODOptions
from sabma.pipeline.build import build_posterior, build_prior
from sabma.pipeline.checks import check_config, check_out_dir
from sabma.pipeline.evaluate import evaluate_and_write, evaluate_run
from sabma.pipeline.resume import check_checkpoint, resume_state, same_config
from sabma.pipeline.search import is_search, train_with_search
from sabma.posterior.prior import head_mask
from sabma.priors.initial import initial_posterior
from sabma.runs.files import atomic_write_text, save_posterior
from sabma.runs.folder import CHECKPOINT, CONFIG, METRICS, POSTERIOR, TRAIN_LOG
from sabma.runs.lock import check_free, run_lock
from sabma.training import Checkpointing, fit

log = logging.getLogger(__name__)


def _prepare_out_dir(out: Path) -> None:
    if (out / METRICS).exists():
        raise ValueError(f"{out} already holds a finished run; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    probe = out / ".write-test"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"output folder {out} is not writable ({err.strerror})") from None


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
    distributed.init(distributed.local_device(resolve_device(cfg.device)))
    main = distributed.is_main()
    if main:  # a live run is reported as such, not as an interrupted one
        check_free(out)
    if not resume:
        check_out_dir(out)
    with run_lock(out) if main else contextlib.nullcontext():
        return _train(cfg, out, progress, resume, test, main, ood)


def _train(
    cfg: Config,
    out: Path,
    progress: bool,
    resume: bool,
    test: bool,
    main: bool,
    ood: OODOptions | None = None,
) -> dict[str, Any]:
    state = resume_state(cfg, out) if resume else None
    torch.manual_seed(cfg.seed)
    task = load_task(cfg, cfg.seed)
    data = task.train_data()
    posterior, head = build_posterior(cfg, task.num_classes)
    if state is not None:
        check_checkpoint(state, posterior, out / CHECKPOINT)
    if not resume and main:  # every input checked: only now is anything written
        _prepare_out_dir(out)
        atomic_write_text(out / CONFIG, dump_config(cfg))
        (out / TRAIN_LOG).write_text("")
    checkpoint = Checkpointing(
        out / CHECKPOINT,
        cfg.optim.checkpoint_every,
        state,
        elapsed_before=state.elapsed if state is not None else 0.0,
        write=main,
        config=dump_config(cfg),
    )
    prior = build_prior(cfg, posterior, head, data)
    method = get_method(cfg.method.name)  # one instance for the whole run (it may hold state)
    is_head = head_mask(posterior, head)
    start = initial_posterior(cfg, posterior, is_head, head, data, prior)
    method.initialise(posterior, start, is_head, cfg)
    try:
        fit(
            posterior,
            data,
            cfg,
            prior,
            method=method,
            log_path=out / TRAIN_LOG if main else None,
            progress=progress and main,
            checkpoint=checkpoint,
        )
    except Exception:  # diverged or refused: a run with nothing to return to leaves nothing
        if main and not resume and not (out / CHECKPOINT).is_file():
            for name in (CONFIG, TRAIN_LOG):
                (out / name).unlink(missing_ok=True)
        raise
    train_s = checkpoint.elapsed()
    if not main:  # rank 0 evaluates and writes; the others are done
        distributed.barrier()
        return {}
    save_posterior(
        out / POSTERIOR,
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
    metrics = evaluate_and_write(
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
        ood=ood,
    )
    (out / CHECKPOINT).unlink(missing_ok=True)  # metrics.json marks the run finished
    distributed.barrier()
    return metrics


def check_reusable(cfg: Config, out: Path) -> None:
    """Refuse ``out`` if it holds a finished run of another configuration (it would be neither
    reused nor overwritten)."""
    if (out / METRICS).is_file() and not same_config(out / CONFIG, cfg):
        raise ValueError(
            f"{out} holds a finished run with another configuration; choose another --out"
        )


def run_or_reuse(
    cfg: Config, out: Path, progress: bool, test: bool = True, ood: OODOptions | None = None
) -> dict[str, Any]:
    """Train into ``out``, or reuse a finished run there with the same configuration; with
    ``ood``, a reused run without those OOD sets is evaluated on them."""
    metrics_file = out / METRICS
    if metrics_file.is_file():
        check_reusable(cfg, out)
        log.info("reusing the finished run in %s", out)
        metrics = json.loads(metrics_file.read_text())
        if ood is not None and not has_ood_sets(metrics, ood):
            metrics = evaluate_run(out, progress=progress, ood=ood)
        return metrics
    if (out / CONFIG).is_file():  # interrupted (with or without a checkpoint yet)
        log.info("resuming the interrupted run in %s", out)
        return train_run(cfg, out, progress=progress, resume=True, test=test, ood=ood)
    return train_run(cfg, out, progress=progress, test=test, ood=ood)


def has_ood_sets(metrics: dict[str, Any], ood: OODOptions) -> bool:
    """Whether a run's metrics hold an OOD section of these sets, sizes and samples."""
    section = metrics.get("ood")
    if not section or list(section.get("sets", {})) != list(ood.specs):
        return False
    if ood.samples is not None and section.get("samples") != ood.samples:
        return False
    return not ood.size or all(s["size"] <= ood.size for s in section["sets"].values())
