"""Predictive log-probabilities over a whole (in-memory) dataset, batch by batch."""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sabma.config import DEFAULT_BMA_SAMPLES
from sabma.models import inputs
from sabma.models.inputs import Inputs
from sabma.posterior.gaussian import GaussianPosterior
from sabma.predict.bma import bma_log_probs


@torch.no_grad()
def predict_log_probs(
    posterior: GaussianPosterior,
    x: Inputs,
    samples: int = DEFAULT_BMA_SAMPLES,
    *,
    point: bool = False,
    weights: Tensor | None = None,
    batch_size: int = 250,
    generator: torch.Generator | None = None,
    progress: bool = False,
    desc: str = "predict",
) -> Tensor:
    """log p̄(y | x) for every row of ``x``, shape (n, classes).

    The S weight samples are drawn once and used for every batch, so every input is averaged over
    the same posterior draws. ``point=True`` evaluates the posterior mean alone (a point estimate);
    ``weights`` (S, d) replaces the draws by a given set (ensemble members, SGLD samples).
    Batches are moved to the posterior's device; the result is on ``x``'s device. Token inputs
    are batched in order of length (less padding); the rows come back in ``x``'s order.
    """
    if point:
        weights = None
    elif weights is None:
        weights = posterior.sample_weights(samples, generator).detach()
    order = inputs.length_order(x)
    ordered = x if order is None else inputs.take(x, order)
    out = []
    parts = inputs.batches(ordered, batch_size)
    for part in tqdm(parts, desc=desc, disable=not progress, leave=False):
        batch = inputs.to_device(part, posterior.device)
        if weights is None:
            log_probs = torch.log_softmax(inputs.call(posterior.mean_forward, batch), dim=-1)
        else:
            log_probs = bma_log_probs(posterior, batch, weights=weights)
        out.append(log_probs.to(inputs.device_of(x)))
    result = torch.cat(out)
    return result if order is None else result[torch.argsort(order.to(result.device))]
