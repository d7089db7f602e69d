"""Model selection inside the loop: the validation NLL, the best state, early stopping."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor

from sabma.config import Config
from sabma.data.tasks import TrainData
from sabma.metrics import negative_log_likelihood
from sabma.posterior.gaussian import GaussianPosterior
from sabma.predict.dataset import predict_log_probs
from sabma.training.checkpointing import BestState


def model_buffers(posterior: GaussianPosterior) -> dict[str, Tensor]:
    """Copies of the network's buffers (BatchNorm running statistics, …)."""
    return {n: b.detach().clone() for n, b in posterior.model.named_buffers()}


@torch.no_grad()
def load_buffers(posterior: GaussianPosterior, values: dict[str, Tensor]) -> None:
    buffers = dict(posterior.model.named_buffers())
    for name, value in values.items():
        buffers[name].copy_(value)


def snapshot(posterior: GaussianPosterior, val_nll: float) -> BestState:
    return BestState(val_nll, copy.deepcopy(posterior.state_dict()), model_buffers(posterior))


def restore(posterior: GaussianPosterior, best: BestState) -> None:
    posterior.load_state_dict(best.posterior)
    load_buffers(posterior, best.buffers)


def val_nll(posterior: GaussianPosterior, data: TrainData, cfg: Config, point: bool) -> float:
    """The validation NLL of the predictive: BMA over ``eval.val_samples`` draws (the same draws
    at every evaluation), or the point estimate."""
    posterior.eval()
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    log_probs = predict_log_probs(
        posterior,
        data.x_val,
        cfg.eval.val_samples,
        point=point,
        batch_size=cfg.eval.batch_size,
        generator=generator,
    )
    return negative_log_likelihood(log_probs.exp(), data.y_val)


def patience_spent(history: list[dict[str, Any]], patience: int) -> bool:
    """Whether the last ``patience`` validation evaluations (of this member) all failed to
    beat the best one before them (0: never)."""
    scores = [e["val_nll"] for e in history if "val_nll" in e]
    if patience < 1 or len(scores) <= patience:
        return False
    return min(scores[-patience:]) >= min(scores[:-patience])
