"""Predictive probabilities over a whole dataset, batch by batch: in-memory inputs
(:func:`predict_log_probs`) or any loader (:func:`bma`)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sabma.config import DEFAULT_BMA_SAMPLES
from sabma.models import inputs
from sabma.models.inputs import Inputs
from sabma.posterior.gaussian import GaussianPosterior
from sabma.predict.bma import bma_log_probs

#: the floats of posterior draws held at once: (S, d) beyond this is drawn and averaged in
#: chunks of rows, so memory stays bounded whatever S (256 MiB of float32)
SAMPLE_FLOATS = 2**26


def _batch_log_probs(posterior: GaussianPosterior, batch: Inputs, weights: Tensor | None) -> Tensor:
    """log p̄(y | x) of one batch: at the mean (``weights`` None) or averaged over ``weights``."""
    if weights is None:
        return torch.log_softmax(inputs.call(posterior.mean_forward, batch), dim=-1)
    return bma_log_probs(posterior, batch, weights=weights)


def _streamed(
    posterior: GaussianPosterior,
    x: Inputs,
    samples: int,
    weights: Tensor | None,
    chunk: int,
    batch_size: int,
    generator: torch.Generator | None,
    progress: bool,
    desc: str,
) -> Tensor:
    """log p̄ over many draws, ``chunk`` at a time: log Σ_s p_s accumulated by logaddexp."""
    total = samples if weights is None else len(weights)
    acc: Tensor | None = None
    for start in range(0, total, chunk):
        count = min(chunk, total - start)
        part = (
            posterior.sample_weights(count, generator).detach()
            if weights is None
            else weights[start : start + count]
        )
        mean = predict_log_probs(
            posterior, x, weights=part, batch_size=batch_size, progress=progress, desc=desc
        )
        summed = mean + math.log(count)
        acc = summed if acc is None else torch.logaddexp(acc, summed)
    assert acc is not None
    return acc - math.log(total)


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
    the same posterior draws (beyond :data:`SAMPLE_FLOATS` floats of draws, they are drawn and
    averaged chunk by chunk: memory does not grow with S). ``point=True`` evaluates the posterior
    mean alone (a point estimate);
    ``weights`` (S, d) replaces the draws by a given set (ensemble members, SGLD samples).
    Batches are moved to the posterior's device; the result is on ``x``'s device. Token inputs
    are batched in order of length (less padding); the rows come back in ``x``'s order.
    """
    chunk = max(1, SAMPLE_FLOATS // posterior.dim)
    if not point and (
        (weights is None and samples > chunk) or (weights is not None and len(weights) > chunk)
    ):
        return _streamed(
            posterior, x, samples, weights, chunk, batch_size, generator, progress, desc
        )
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
        out.append(_batch_log_probs(posterior, batch, weights).to(inputs.device_of(x)))
    result = torch.cat(out)
    return result if order is None else result[torch.argsort(order.to(result.device))]


@torch.no_grad()
def bma(
    posterior: GaussianPosterior | Any,
    data: Inputs | Iterable[Any],
    samples: int = DEFAULT_BMA_SAMPLES,
    *,
    mean: bool = False,
    generator: torch.Generator | None = None,
    batch_size: int = 250,
    progress: bool = False,
) -> Tensor:
    """p̄(y | x) = (1/S) Σ_s softmax(f(x; w_s)) for every input of ``data``, shape (n, classes),
    in the order the loader yields them (on the CPU).

    Args:
        posterior: a :class:`~sabma.GaussianPosterior`, or an optimiser that holds one (the
            drop-in ``SABMA(model, …)``).
        data: a ``DataLoader`` (batches of inputs, ``(inputs, labels, …)`` or dicts of tensors;
            labels are ignored) or in-memory inputs.
        samples: S; the same S draws serve every batch.
        mean: the posterior mean's prediction instead (a point estimate).
        batch_size: inputs per forward pass (larger batches of ``data`` are split).

    The network runs in eval mode and goes back to its mode after."""
    posterior = getattr(posterior, "posterior", posterior)
    if not isinstance(posterior, GaussianPosterior):
        raise TypeError(
            f"bma needs a GaussianPosterior or an optimiser holding one, got "
            f"{type(posterior).__name__}"
        )
    weights = None if mean else posterior.sample_weights(samples, generator).detach()
    was_training = posterior.model.training
    posterior.eval()
    out = []
    try:
        batches = inputs.input_batches(data, batch_size)
        for part in tqdm(batches, desc="BMA", disable=not progress, leave=False):
            batch = inputs.to_device(part, posterior.device)
            out.append(_batch_log_probs(posterior, batch, weights).exp().cpu())
    finally:
        posterior.train(was_training)
    if not out:
        raise ValueError("bma: data yields no inputs")
    return torch.cat(out)
