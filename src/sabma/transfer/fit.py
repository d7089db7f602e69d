"""Training the subset with any method of :mod:`sabma.methods`, one loop for all.

Every method gets the same data, batches, schedule (warm-up + cosine, stepped per batch), budget
and model-selection rule: every ``eval_every`` epochs the validation NLL of the method's predictive
(BMA with ``val_samples`` fixed draws, or the point estimate) is computed and the best state kept.

With a :class:`Checkpointing`, the whole training state (posterior, model buffers, optimiser,
schedule, loss scaler, method state, RNG states, the epoch's batch order and position, history,
best state) is written atomically every ``every`` steps and when training ends; a run resumed
from any checkpoint continues bit for bit (on a CPU) as if it had never stopped.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sabma import distributed
from sabma.config import Config
from sabma.data import inputs
from sabma.data.inputs import Inputs
from sabma.data.preprocess import augment
from sabma.device import amp_dtype
from sabma.methods import Method, get_method
from sabma.methods.base import NonFiniteLoss, abandon_step
from sabma.metrics import negative_log_likelihood
from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian
from sabma.predict.dataset import predict_log_probs
from sabma.runs.checkpoint import rng_state, save_checkpoint, set_rng_state
from sabma.transfer.frozen import FrozenRest

log = logging.getLogger(__name__)

#: Non-finite losses in a row after which training stops (each one's step is skipped).
MAX_NONFINITE_IN_A_ROW = 5


@dataclass
class Checkpointing:
    """Where and how often :func:`fit` saves its state, and the state to resume from."""

    path: Path
    every: int = 50
    """steps between checkpoints (0: only when training ends)"""
    resume: dict[str, Any] | None = None
    """a state read by :func:`sabma.runs.checkpoint.load_checkpoint`"""
    started: float = field(default_factory=time.perf_counter)
    elapsed_before: float = 0.0
    """training seconds spent before this process (carried through checkpoints)"""
    write: bool = True
    """False in the processes other than rank 0 of a multi-process run (they only resume)"""

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started


@dataclass
class TrainData:
    x_train: Inputs
    y_train: Tensor
    x_val: Inputs
    y_val: Tensor


def _model_buffers(posterior: GaussianPosterior) -> dict[str, Tensor]:
    return {n: b.detach().clone() for n, b in posterior.model.named_buffers()}


@torch.no_grad()
def _load_buffers(posterior: GaussianPosterior, values: dict[str, Tensor]) -> None:
    buffers = dict(posterior.model.named_buffers())
    for name, value in values.items():
        buffers[name].copy_(value)


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
    resume = checkpoint.resume if checkpoint is not None else None
    members = method.members(cfg)
    history: list[dict[str, Any]] = []
    first = 0
    if resume is not None:
        history, first = list(resume["history"]), int(resume["member"])
        if log_path is not None:  # the log as of the checkpoint (later lines were lost)
            entries = history + list(resume.get("member_history", []))
            log_path.write_text("".join(json.dumps(e) + "\n" for e in entries))
        if resume["done"]:
            return _restore_finished(posterior, data, cfg, prior, method, resume)
    for member in range(first, members):
        state = resume if resume is not None and member == first else None
        if members > 1 and state is None:
            method.start_member(posterior, member, cfg)
        history += _fit_once(
            posterior,
            data,
            cfg,
            prior,
            method,
            member,
            log_path,
            progress,
            checkpoint,
            state,
            history,
        )
        method.end_member(posterior, member, cfg)
    method.finish(posterior, cfg)
    if checkpoint is not None and checkpoint.write:
        save_checkpoint(
            checkpoint.path,
            {
                "done": True,
                "names": posterior.names,
                "member": members,
                "history": history,
                "posterior": posterior.state_dict(),
                "buffers": _model_buffers(posterior),
                "method": method.state_dict(),
                "elapsed": checkpoint.elapsed(),
            },
        )
    return history


def _restore_finished(
    posterior: GaussianPosterior,
    data: TrainData,
    cfg: Config,
    prior: LowRankGaussian | None,
    method: Method,
    state: dict[str, Any],
) -> list[dict[str, Any]]:
    """The state of a run whose training ended (killed during evaluation)."""
    method.train_inputs = data.x_train
    optimizer = method.optimizer(posterior, prior, cfg, inputs.count(data.x_train))
    method.schedule(optimizer, math.ceil(inputs.count(data.x_train) / cfg.optim.batch_size), cfg)
    posterior.load_state_dict(state["posterior"])
    _load_buffers(posterior, state["buffers"])
    method.load_state_dict(state["method"])
    return list(state["history"])


def _fit_once(
    posterior: GaussianPosterior,
    data: TrainData,
    cfg: Config,
    prior: LowRankGaussian | None,
    method: Method,
    member: int,
    log_path: Path | None,
    progress: bool,
    checkpoint: Checkpointing | None,
    resume: dict[str, Any] | None,
    earlier: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    opt_cfg = cfg.optim
    n = inputs.count(data.x_train)
    gen = torch.Generator().manual_seed(cfg.seed + 7919 * member)
    method.train_inputs = data.x_train
    optimizer = method.optimizer(posterior, prior, cfg, n)
    steps_per_epoch = math.ceil(n / opt_cfg.batch_size)
    schedule = method.schedule(optimizer, steps_per_epoch, cfg)
    scaler = None
    if amp_dtype(opt_cfg.amp) is torch.float16:
        scaler = torch.amp.GradScaler(posterior.device.type)
    frozen = None
    if cfg.method.frozen == "prior":
        frozen = FrozenRest(posterior.model, posterior.names, cfg.method.frozen_std)

    history: list[dict[str, Any]] = []
    best: tuple[float, dict[str, Tensor], dict[str, Tensor]] | None = None
    first_epoch, position, steps = 0, 0, 0
    order: Tensor | None = None
    losses: list[float] = []
    skipped, bad_in_a_row = 0, 0
    if resume is not None:
        posterior.load_state_dict(resume["posterior"])
        _load_buffers(posterior, resume["buffers"])
        optimizer.load_state_dict(resume["optimizer"])
        schedule.load_state_dict(resume["schedule"])
        if scaler is not None and resume["scaler"] is not None:
            scaler.load_state_dict(resume["scaler"])
        method.load_state_dict(resume["method"])
        gen.set_state(resume["generator"])
        set_rng_state(resume["rng"])
        first_epoch, position, steps = resume["epoch"], resume["position"], resume["steps"]
        order, losses, skipped = resume["order"], list(resume["losses"]), resume["skipped"]
        history = list(resume["member_history"])
        if resume["best"] is not None:
            best = (
                resume["best"]["val_nll"],
                resume["best"]["posterior"],
                resume["best"]["buffers"],
            )

    def save() -> None:
        assert checkpoint is not None
        save_checkpoint(
            checkpoint.path,
            {
                "done": False,
                "names": posterior.names,
                "member": member,
                "history": earlier,
                "member_history": history,
                "epoch": epoch,
                "position": position,
                "steps": steps,
                "order": order,
                "losses": losses,
                "skipped": skipped,
                "posterior": posterior.state_dict(),
                "buffers": _model_buffers(posterior),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "scaler": None if scaler is None else scaler.state_dict(),
                "method": method.state_dict(),
                "generator": gen.get_state(),
                "rng": rng_state(),
                "best": None
                if best is None
                else {"val_nll": best[0], "posterior": best[1], "buffers": best[2]},
                "elapsed": checkpoint.elapsed(),
            },
        )

    bar = tqdm(
        range(first_epoch, opt_cfg.epochs),
        desc=f"train {method.name}",
        disable=not progress,
        leave=False,
    )
    for epoch in bar:
        method.train_mode(posterior, cfg)
        start = time.perf_counter()
        if order is None:
            order, position, losses, skipped = torch.randperm(n, generator=gen), 0, [], 0
        batches = order.split(opt_cfg.batch_size)
        while position < len(batches):
            idx = batches[position]
            xb, yb = inputs.take(data.x_train, idx), data.y_train[idx]
            if cfg.data.augment and isinstance(xb, Tensor):
                xb = augment(xb, gen)  # on the global batch: the same draws in every process
            mine, method.batch_weight = distributed.shard(torch.arange(len(idx)))
            xb = inputs.to_device(inputs.take(xb, mine), posterior.device)
            yb = yb[mine].to(posterior.device)
            if frozen is not None:
                frozen.resample(gen)
            try:
                if scaler is not None:
                    loss = method.step_scaled(posterior, optimizer, xb, yb, scaler)
                    if math.isnan(loss):  # fp16 overflow: step skipped, the scale lowered
                        skipped += 1
                    else:
                        losses.append(loss)
                else:
                    losses.append(method.step(posterior, optimizer, xb, yb))
                bad_in_a_row = 0
            except NonFiniteLoss:
                abandon_step(optimizer)
                skipped, bad_in_a_row = skipped + 1, bad_in_a_row + 1
                log.warning(
                    "%s: non-finite loss at epoch %d, step %d: step skipped",
                    method.name,
                    epoch + 1,
                    position + 1,
                )
                if bad_in_a_row >= MAX_NONFINITE_IN_A_ROW:
                    where = f"; the last good checkpoint is {checkpoint.path}" if checkpoint else ""
                    raise FloatingPointError(
                        f"training diverged: {bad_in_a_row} non-finite losses in a row at epoch "
                        f"{epoch + 1}{where} (lower optim.lr or method.rho, then --resume)"
                    ) from None
            if posterior.model.training:
                distributed.broadcast_buffers(posterior.model)
            schedule.step()
            position, steps = position + 1, steps + 1
            every = checkpoint.every if checkpoint is not None and checkpoint.write else 0
            if every and steps % every == 0:
                save()
        if frozen is not None:
            frozen.restore()
        if not losses:
            raise FloatingPointError(
                f"every step of epoch {epoch + 1} was skipped (non-finite loss or fp16 "
                "overflow); lower optim.lr, or use optim.amp=bf16 or none"
            )
        method.on_epoch_end(posterior, epoch + 1, cfg)
        entry: dict[str, Any] = {
            "member": member,
            "epoch": epoch + 1,
            "loss": sum(losses) / len(losses),
            "lr": schedule.get_last_lr()[0],
            "epoch_s": time.perf_counter() - start,
        }
        if scaler is not None or skipped:
            entry["skipped_steps"] = skipped
        if (epoch + 1) % cfg.eval.eval_every == 0 or epoch + 1 == opt_cfg.epochs:
            entry["val_nll"] = _val_nll(posterior, data, cfg, method.trains_at_mean)
            if method.select_best and (best is None or entry["val_nll"] < best[0]):
                best = (
                    entry["val_nll"],
                    copy.deepcopy(posterior.state_dict()),
                    _model_buffers(posterior),
                )
        history.append(entry)
        order = None
        stop = _patience_spent(history, cfg.eval.patience) if method.select_best else False
        shown = {"loss": f"{entry['loss']:.3f}"}
        if best is not None:
            shown["best_val_nll"] = f"{best[0]:.3f}"
        bar.set_postfix(shown)
        if log_path is not None:
            with log_path.open("a") as handle:
                handle.write(json.dumps(entry) + "\n")
        if stop:
            log.info(
                "%s: early stop at epoch %d (patience %d)",
                method.name,
                epoch + 1,
                cfg.eval.patience,
            )
            break
    if best is not None:
        posterior.load_state_dict(best[1])
        _load_buffers(posterior, best[2])
        log.info("%s: best validation NLL %.4f", method.name, best[0])
    return history


def _patience_spent(history: list[dict[str, Any]], patience: int) -> bool:
    """Whether the last ``patience`` validation evaluations (of this member) all failed to
    beat the best one before them (0: never)."""
    scores = [e["val_nll"] for e in history if "val_nll" in e]
    if patience < 1 or len(scores) <= patience:
        return False
    return min(scores[-patience:]) >= min(scores[:-patience])


def _val_nll(posterior: GaussianPosterior, data: TrainData, cfg: Config, point: bool) -> float:
    posterior.eval()
    generator = torch.Generator().manual_seed(cfg.seed + 1)  # the same draws at every evaluation
    log_probs = predict_log_probs(
        posterior,
        data.x_val,
        cfg.eval.val_samples,
        point=point,
        batch_size=cfg.eval.batch_size,
        generator=generator,
    )
    return negative_log_likelihood(log_probs.exp(), data.y_val)
