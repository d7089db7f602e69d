"""Training the subset with any method of :mod:`sabma.methods`, one loop for all.

Every method gets the same data, batches, schedule (warm-up + cosine, stepped per batch), budget
and model-selection rule: every ``eval_every`` epochs the validation NLL of the method's predictive
(BMA with ``val_samples`` fixed draws, or the point estimate) is computed and the best state kept.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sabma.config import Config
from sabma.data.preprocess import augment
from sabma.device import amp_dtype
from sabma.methods import Method, get_method
from sabma.metrics import negative_log_likelihood
from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian
from sabma.predict.dataset import predict_log_probs
from sabma.transfer.frozen import FrozenRest

log = logging.getLogger(__name__)


@dataclass
class TrainData:
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor


def _model_buffers(posterior: GaussianPosterior) -> dict[str, Tensor]:
    return {n: b.detach().clone() for n, b in posterior.model.named_buffers()}


def fit(
    posterior: GaussianPosterior,
    data: TrainData,
    cfg: Config,
    prior: LowRankGaussian | None,
    *,
    method: Method | None = None,
    log_path: Path | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train ``posterior`` in place with method ``cfg.method.name``; returns the per-epoch history.

    For methods that select (``Method.select_best``), the posterior (and the model's buffers) end
    in the state with the best validation NLL among the evaluated epochs; then the method's
    ``finish`` runs (SWAG forms its Gaussian there). Methods with several members (ensembles)
    run the whole loop once per member, each with its own data order.
    """
    method = method or get_method(cfg.method.name)
    opt_cfg = cfg.optim
    if opt_cfg.epochs < 1 or opt_cfg.batch_size < 1 or not opt_cfg.lr > 0:
        raise ValueError("optim.epochs and optim.batch_size must be >= 1 and optim.lr > 0")
    if cfg.method.frozen not in ("fixed", "prior"):
        raise ValueError(f"method.frozen must be 'fixed' or 'prior', got {cfg.method.frozen!r}")
    if amp_dtype(opt_cfg.amp) is torch.float16 and not method.supports_loss_scaling:
        raise ValueError(
            f"optim.amp=fp16 needs loss scaling, which method {method.name!r} (its own update) "
            "does not support; use optim.amp=bf16"
        )
    members = method.members(cfg)
    history: list[dict[str, Any]] = []
    for member in range(members):
        if members > 1:
            method.start_member(posterior, member, cfg)
        history += _fit_once(posterior, data, cfg, prior, method, member, log_path, progress)
        method.end_member(posterior, member, cfg)
    method.finish(posterior, cfg)
    return history


def _fit_once(
    posterior: GaussianPosterior,
    data: TrainData,
    cfg: Config,
    prior: LowRankGaussian | None,
    method: Method,
    member: int,
    log_path: Path | None,
    progress: bool,
) -> list[dict[str, Any]]:
    opt_cfg = cfg.optim
    n = len(data.x_train)
    gen = torch.Generator().manual_seed(cfg.seed + 7919 * member)
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
    bar = tqdm(
        range(opt_cfg.epochs), desc=f"train {method.name}", disable=not progress, leave=False
    )
    for epoch in bar:
        method.train_mode(posterior, cfg)
        start, losses, skipped = time.perf_counter(), [], 0
        for idx in torch.randperm(n, generator=gen).split(opt_cfg.batch_size):
            xb, yb = data.x_train[idx], data.y_train[idx]
            if cfg.data.augment:
                xb = augment(xb, gen)
            xb, yb = xb.to(posterior.device), yb.to(posterior.device)
            if frozen is not None:
                frozen.resample(gen)
            if scaler is not None:
                loss = method.step_scaled(posterior, optimizer, xb, yb, scaler)
                if math.isnan(loss):  # fp16 overflow: the step was skipped, the scale lowered
                    skipped += 1
                    schedule.step()
                    continue
                losses.append(loss)
            else:
                losses.append(method.step(posterior, optimizer, xb, yb))
            if not math.isfinite(losses[-1]):
                raise ValueError(
                    f"training diverged at epoch {epoch + 1} (loss {losses[-1]}); "
                    "lower optim.lr or method.rho"
                )
            schedule.step()
        if frozen is not None:
            frozen.restore()
        method.on_epoch_end(posterior, epoch + 1, cfg)
        if not losses:
            raise ValueError(
                f"every fp16 step of epoch {epoch + 1} overflowed; use optim.amp=bf16 or none"
            )
        entry: dict[str, Any] = {
            "member": member,
            "epoch": epoch + 1,
            "loss": sum(losses) / len(losses),
            "lr": schedule.get_last_lr()[0],
            "epoch_s": time.perf_counter() - start,
        }
        if scaler is not None:
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
        shown = {"loss": f"{entry['loss']:.3f}"}
        if best is not None:
            shown["best_val_nll"] = f"{best[0]:.3f}"
        bar.set_postfix(shown)
        if log_path is not None:
            with log_path.open("a") as handle:
                handle.write(json.dumps(entry) + "\n")
    if best is not None:
        posterior.load_state_dict(best[1])
        buffers = dict(posterior.model.named_buffers())
        with torch.no_grad():
            for name, value in best[2].items():
                buffers[name].copy_(value)
        log.info("%s: best validation NLL %.4f", method.name, best[0])
    return history


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
