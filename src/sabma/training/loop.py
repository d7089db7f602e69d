"""Training the subset with any method of :mod:`sabma.methods`, one loop for all.

Every method gets the same data, batches, schedule (warm-up + cosine, stepped per batch), budget
and model-selection rule: every ``eval_every`` epochs the validation NLL of the method's predictive
(BMA with ``val_samples`` fixed draws, or the point estimate) is computed and the best state kept
(:mod:`sabma.training.selection`).

With a :class:`Checkpointing`, the whole training state (:class:`LoopState`) is written atomically
every ``every`` steps and when training ends; a run resumed from any checkpoint continues bit for
bit (on a CPU) as if it had never stopped.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from sabma import distributed
from sabma.config import Config
from sabma.data.tasks import TrainData
from sabma.device import amp_dtype
from sabma.methods import Method, get_method
from sabma.models import inputs
from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian
from sabma.training.checkpointing import Checkpointing, LoopState
from sabma.training.member import MemberLoop
from sabma.training.selection import load_buffers, model_buffers


def check_training_config(cfg: Config, method: Method, checkpoint: Checkpointing | None) -> None:
    opt_cfg = cfg.optim
    if opt_cfg.epochs < 1 or opt_cfg.batch_size < 1 or not opt_cfg.lr > 0:
        raise ValueError("optim.epochs and optim.batch_size must be >= 1 and optim.lr > 0")
    if cfg.method.frozen not in ("fixed", "prior"):
        raise ValueError(f"method.frozen must be 'fixed' or 'prior', got {cfg.method.frozen!r}")
    if amp_dtype(opt_cfg.amp) is torch.float16 and not method.supports_loss_scaling(cfg):
        raise ValueError(
            f"optim.amp=fp16 needs loss scaling, which method {method.name!r} (its own update) "
            "does not support; use optim.amp=bf16"
        )
    if distributed.world_size() > 1 and amp_dtype(opt_cfg.amp) is torch.float16:
        raise ValueError("optim.amp=fp16 is not supported with several processes; use bf16")
    if checkpoint is not None and checkpoint.every < 0:
        raise ValueError(f"optim.checkpoint_every must be >= 0, got {checkpoint.every}")


def fit(
    posterior: GaussianPosterior,
    data: TrainData,
    cfg: Config,
    prior: LowRankGaussian | None,
    *,
    method: Method | None = None,
    log_path: Path | None = None,
    progress: bool = True,
    checkpoint: Checkpointing | None = None,
) -> list[dict[str, Any]]:
    """Train ``posterior`` in place with method ``cfg.method.name``; returns the per-epoch history.

    For methods that select (``Method.select_best``), the posterior (and the model's buffers) end
    in the state with the best validation NLL among the evaluated epochs; then the method's
    ``finish`` runs (SWAG forms its Gaussian there). Methods with several members (ensembles)
    run the whole loop once per member, each with its own data order. With ``checkpoint``, the
    state is saved as it goes and, if ``checkpoint.resume`` is set, training continues from it.
    """
    method = method or get_method(cfg.method.name)
    check_training_config(cfg, method, checkpoint)
    resume = checkpoint.resume if checkpoint is not None else None
    members = method.members(cfg)
    history: list[dict[str, Any]] = []
    first = 0
    if resume is not None:
        history, first = list(resume.history), resume.member
        if log_path is not None:  # the log as of the checkpoint (later lines were lost)
            entries = history + list(resume.member_history)
            log_path.write_text("".join(json.dumps(e) + "\n" for e in entries))
        if resume.done:
            return _restore_finished(posterior, data, cfg, prior, method, resume)
    for member in range(first, members):
        state = resume if resume is not None and member == first else None
        if members > 1 and state is None:
            method.start_member(posterior, member, cfg)
        loop = MemberLoop(posterior, data, cfg, prior, method, member, checkpoint, history)
        if state is not None:
            loop.resume(state)
        history += loop.run(log_path, progress)
        method.end_member(posterior, member, cfg)
    method.finish(posterior, cfg)
    if checkpoint is not None and checkpoint.write:
        LoopState(
            done=True,
            names=posterior.names,
            member=members,
            history=history,
            posterior=posterior.state_dict(),
            buffers=model_buffers(posterior),
            method=method.state_dict(),
            elapsed=checkpoint.elapsed(),
            config=checkpoint.config,
        ).save(checkpoint.path)
    return history


def _restore_finished(
    posterior: GaussianPosterior,
    data: TrainData,
    cfg: Config,
    prior: LowRankGaussian | None,
    method: Method,
    state: LoopState,
) -> list[dict[str, Any]]:
    """The state of a run whose training ended (killed during evaluation)."""
    optimizer = method.build_optimizer(
        posterior, prior, cfg, inputs.count(data.x_train), data.x_train
    )
    method.schedule(optimizer, math.ceil(inputs.count(data.x_train) / cfg.optim.batch_size), cfg)
    posterior.load_state_dict(state.posterior)
    load_buffers(posterior, state.buffers)
    method.load_state_dict(state.method)
    return list(state.history)
