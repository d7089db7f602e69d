"""One run (no search) into its folder (:mod:`sabma.runs.folder`): checks, prior, initial
posterior, the shared loop with checkpoints (resumable), then evaluation; and the rule for a
folder that already holds a run (reuse a finished one, resume an interrupted one)."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
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
from sabma.pipeline.evaluate import evaluate_and_write
from sabma.pipeline.resume import check_checkpoint, resume_state, same_config
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


def train_single(
    cfg: Config,
    out: Path,
    progress: bool = True,
    resume: bool = False,
    test: bool = True,
    ood: OODOptions | None = None,
) -> dict[str, Any]:
    """Train and evaluate one run of ``cfg`` (no search) into ``out``; see
    :func:`sabma.pipeline.train.train_run`."""
    check_config(cfg)
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
    log_path = out / TRAIN_LOG if main else None
    try:
        fit(
            posterior,
            data,
            cfg,
            prior,
            method=method,
            log_path=log_path,
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
    meta = {"method": cfg.method.name, "backbone": cfg.model.backbone, "subset": cfg.model.subset}
    save_posterior(out / POSTERIOR, posterior, {**meta, "head": head}, samples=method.samples())
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


def finished_or(cfg: Config, out: Path, train: Callable[[bool], dict[str, Any]]) -> dict[str, Any]:
    """The metrics of the finished run of ``cfg`` in ``out`` (another configuration there is
    refused), else ``train(resume)``: resuming an interrupted run (its config.yaml is there, with
    or without a checkpoint yet), or a new one."""
    metrics_file = out / METRICS
    if metrics_file.is_file():
        check_reusable(cfg, out)
        log.info("reusing the finished run in %s", out)
        return dict(json.loads(metrics_file.read_text()))
    if (out / CONFIG).is_file():
        log.info("resuming the interrupted run in %s", out)
        return train(True)
    return train(False)
