"""Training the subset: SA-BMA (a posterior) or SGD (a point estimate), one loop for both.

Both get the same data, batches, schedule (warm-up + cosine, stepped per batch), budget and
model-selection rule: every ``eval_every`` epochs the validation NLL of the method's predictive
(BMA with ``val_samples`` fixed draws, or the point estimate) is computed and the best state kept.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn.functional import cross_entropy
from tqdm.auto import tqdm

from sabma.config import Config
from sabma.data.preprocess import augment
from sabma.metrics import negative_log_likelihood
from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian
from sabma.predict.dataset import predict_log_probs
from sabma.step.sabma import SABMA
from sabma.transfer.frozen import FrozenRest
from sabma.transfer.schedule import warmup_cosine

log = logging.getLogger(__name__)

METHODS = ("sabma", "sgd")


@dataclass
class TrainData:
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor


def is_point_method(method: str) -> bool:
    return method == "sgd"


def set_network_mode(posterior: GaussianPosterior, bn_mode: str) -> None:
    """Training mode of the network: ``"train"`` (batch statistics, dropout) or ``"eval"``."""
    if bn_mode not in ("train", "eval"):
        raise ValueError(f"model.bn_mode must be 'train' or 'eval', got {bn_mode!r}")
    posterior.train(bn_mode == "train")


def _model_buffers(posterior: GaussianPosterior) -> dict[str, Tensor]:
    return {n: b.detach().clone() for n, b in posterior.model.named_buffers()}


def fit(
    posterior: GaussianPosterior,
    data: TrainData,
    cfg: Config,
    prior: LowRankGaussian | None,
    *,
    log_path: Path | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train ``posterior`` in place with ``cfg.method.name``; returns the per-epoch history.

    At the end the posterior (and the model's buffers) hold the state with the best validation
    NLL among the evaluated epochs.
    """
    method, opt_cfg = cfg.method.name, cfg.optim
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    if opt_cfg.epochs < 1 or opt_cfg.batch_size < 1 or not opt_cfg.lr > 0:
        raise ValueError("optim.epochs and optim.batch_size must be >= 1 and optim.lr > 0")
    n = len(data.x_train)
    gen = torch.Generator().manual_seed(cfg.seed)
    point = is_point_method(method)
    optimizer: torch.optim.Optimizer
    if point:
        optimizer = torch.optim.SGD(
            [posterior.mean],
            lr=opt_cfg.lr,
            momentum=opt_cfg.momentum,
            weight_decay=opt_cfg.weight_decay,
        )
    else:
        kl_weight = cfg.method.beta / n if prior is not None else 0.0
        check_kl_stability(prior, kl_weight, opt_cfg.lr, opt_cfg.momentum)
        optimizer = SABMA(
            posterior,
            torch.optim.SGD,
            rho=cfg.method.rho,
            metric=cfg.method.metric,
            perturb=cfg.method.perturb,
            prior=prior,
            kl_weight=kl_weight,
            block_lr_scale={
                "log_std": cfg.method.log_std_lr_scale,
                "factor": cfg.method.factor_lr_scale,
            },
            lr=opt_cfg.lr,
            momentum=opt_cfg.momentum,
            weight_decay=opt_cfg.weight_decay,
        )
    steps_per_epoch = math.ceil(n / opt_cfg.batch_size)
    schedule = warmup_cosine(
        optimizer, opt_cfg.epochs * steps_per_epoch, opt_cfg.warmup_epochs * steps_per_epoch
    )
    frozen = None
    if cfg.method.frozen == "prior":
        frozen = FrozenRest(posterior.model, posterior.names, cfg.method.frozen_std)
    elif cfg.method.frozen != "fixed":
        raise ValueError(f"method.frozen must be 'fixed' or 'prior', got {cfg.method.frozen!r}")

    history: list[dict[str, Any]] = []
    best: tuple[float, dict[str, Tensor], dict[str, Tensor]] | None = None
    bar = tqdm(range(opt_cfg.epochs), desc=f"train {method}", disable=not progress, leave=False)
    for epoch in bar:
        set_network_mode(posterior, cfg.model.bn_mode)
        start, losses = time.perf_counter(), []
        for idx in torch.randperm(n, generator=gen).split(opt_cfg.batch_size):
            xb, yb = data.x_train[idx], data.y_train[idx]
            if cfg.data.augment:
                xb = augment(xb, gen)
            if frozen is not None:
                frozen.resample(gen)
            losses.append(_step(posterior, optimizer, xb, yb, point))
            if not math.isfinite(losses[-1]):
                raise ValueError(
                    f"training diverged at epoch {epoch + 1} (loss {losses[-1]}); "
                    "lower optim.lr or method.rho"
                )
            schedule.step()
        if frozen is not None:
            frozen.restore()
        entry: dict[str, Any] = {
            "epoch": epoch + 1,
            "loss": sum(losses) / len(losses),
            "lr": schedule.get_last_lr()[0],
            "epoch_s": time.perf_counter() - start,
        }
        if (epoch + 1) % cfg.eval.eval_every == 0 or epoch + 1 == opt_cfg.epochs:
            entry["val_nll"] = _val_nll(posterior, data, cfg, point)
            if best is None or entry["val_nll"] < best[0]:
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
    assert best is not None
    posterior.load_state_dict(best[1])
    buffers = dict(posterior.model.named_buffers())
    with torch.no_grad():
        for name, value in best[2].items():
            buffers[name].copy_(value)
    log.info("%s: best validation NLL %.4f", method, best[0])
    return history


def check_kl_stability(
    prior: LowRankGaussian | None, kl_weight: float, lr: float, momentum: float
) -> None:
    """Refuse a learning rate at which the KL term alone makes SGD diverge.

    On the mean, ``kl_weight · KL(q‖p)`` is a quadratic with curvature up to
    kl_weight · max diag(Σ_p⁻¹); heavy-ball SGD on a quadratic of curvature λ is stable only for
    lr · λ < 2 (1 + momentum).
    """
    if prior is None or kl_weight == 0:
        return
    curvature = kl_weight * float(prior.precision_diag().max())
    if lr * curvature >= 2 * (1 + momentum):
        raise ValueError(
            f"optim.lr={lr} is unstable for the KL term (curvature β/N·max 1/σ²_prior = "
            f"{curvature:.3g}; need lr < {2 * (1 + momentum) / curvature:.3g}): lower optim.lr "
            "or method.beta, or widen the prior"
        )


def _step(
    posterior: GaussianPosterior,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    point: bool,
) -> float:
    optimizer.zero_grad()
    if point:
        loss = cross_entropy(posterior.mean_forward(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    def closure() -> Tensor:
        value = cross_entropy(posterior(x), y)
        value.backward()
        return value

    step: Callable[[Callable[[], Tensor]], Tensor] = optimizer.step  # type: ignore[assignment]
    return step(closure).item()


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
