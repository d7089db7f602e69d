"""Predictive probabilities over a whole dataset, batch by batch: in-memory inputs
(:func:`predict_log_probs`) or any loader (:func:`bma`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sabma.config import DEFAULT_BMA_SAMPLES
from sabma.models import inputs
from sabma.models.inputs import Inputs
from sabma.posterior.gaussian import GaussianPosterior
from sabma.predict.bma import bma_log_probs, sample_logits
from sabma.predict.summary import Predictions, batch_summary, concatenate, pool_draws

#: the floats of posterior draws held at once: (S, d) beyond this is drawn and averaged in
#: chunks of rows, so memory stays bounded whatever S (256 MiB of float32)
SAMPLE_FLOATS = 2**26


def _batch_log_probs(posterior: GaussianPosterior, batch: Inputs, weights: Tensor | None) -> Tensor:
    """log p̄(y | x) of one batch: at the mean (``weights`` None) or averaged over ``weights``."""
    if weights is None:
        return torch.log_softmax(inputs.call(posterior.mean_forward, batch), dim=-1)
    return bma_log_probs(posterior, batch, weights=weights)


def _batch(
    posterior: GaussianPosterior,
    batch: Inputs,
    weights: Tensor | None,
    full: bool,
    temperature: float | None,
) -> Predictions:
    """One batch's figures: its log p̄ alone, or (``full``) every figure of :class:`Predictions`."""
    if not full:
        return Predictions(_batch_log_probs(posterior, batch, weights))
    if weights is None:
        logits = inputs.call(posterior.mean_forward, batch).unsqueeze(0)
    else:
        logits = sample_logits(posterior, weights, batch)
    return batch_summary(logits, temperature)


@torch.no_grad()
def _predict(
    posterior: GaussianPosterior,
    x: Inputs,
    samples: int,
    point: bool,
    weights: Tensor | None,
    batch_size: int,
    generator: torch.Generator | None,
    progress: bool,
    desc: str,
    full: bool = False,
    temperature: float | None = None,
) -> Predictions:
    """The one pass over a dataset behind :func:`predict_log_probs` and
    :func:`predict_summary`: draws once (chunk by chunk beyond :data:`SAMPLE_FLOATS`), batches
    in length order, rows back in ``x``'s order."""
    chunk = max(1, SAMPLE_FLOATS // posterior.dim)
    total = samples if weights is None else len(weights)
    if not point and total > chunk:  # bounded memory: pool the draws chunk by chunk
        parts, counts = [], []
        for start in range(0, total, chunk):
            count = min(chunk, total - start)
            part = (
                posterior.sample_weights(count, generator).detach()
                if weights is None
                else weights[start : start + count]
            )
            parts.append(
                _predict(
                    posterior,
                    x,
                    count,
                    False,
                    part,
                    batch_size,
                    None,
                    progress,
                    desc,
                    full,
                    temperature,
                )
            )
            counts.append(count)
        return pool_draws(parts, counts)
    if point:
        weights = None
    elif weights is None:
        weights = posterior.sample_weights(samples, generator).detach()
    order = inputs.length_order(x)
    ordered = x if order is None else inputs.take(x, order)
    out = []
    for part in tqdm(
        inputs.batches(ordered, batch_size), desc=desc, disable=not progress, leave=False
    ):
        batch = inputs.to_device(part, posterior.device)
        found = _batch(posterior, batch, weights, full, temperature)
        out.append(found.apply(lambda t: t.to(inputs.device_of(x))))
    result = concatenate(out)
    if order is None:
        return result
    back = torch.argsort(order.to(result.log_probs.device))
    return result.apply(lambda t: t[back])


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
    return _predict(
        posterior, x, samples, point, weights, batch_size, generator, progress, desc
    ).log_probs


def predict_summary(
    posterior: GaussianPosterior,
    x: Inputs,
    samples: int = DEFAULT_BMA_SAMPLES,
    *,
    point: bool = False,
    weights: Tensor | None = None,
    temperature: float | None = None,
    batch_size: int = 250,
    generator: torch.Generator | None = None,
    progress: bool = False,
    desc: str = "predict",
) -> Predictions:
    """:func:`predict_log_probs` with the figures uncertainty scores need
    (:class:`~sabma.predict.summary.Predictions`: averaged logits, the draws' expected entropy
    and, at ``temperature``, the tempered members' mixture and expected entropy), from the same
    draws in the same pass; ``log_probs`` equals :func:`predict_log_probs`'s for the same
    generator."""
    return _predict(
        posterior,
        x,
        samples,
        point,
        weights,
        batch_size,
        generator,
        progress,
        desc,
        True,
        temperature,
    )


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
