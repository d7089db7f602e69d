"""Bayesian model averaging: p(y | x, D) ≈ (1/S) Σ_s softmax(f(x; w_s)),  w_s ~ q_θ.

Probabilities are averaged *before* the log, over samples of the same inputs: the samples are
iterated inside each batch, so a shuffled loader can never misalign them.

In eval mode the frozen prefix of the network runs once per batch, not once per sample
(:mod:`sabma.predict.prefix`). The samples run through ``torch.func.vmap`` or a loop (equal to
1e-5); by default whichever was faster in benchmarks/speed.py: vmap on CUDA (5× the throughput
of a loop on an H100 for EfficientNet-Lite0's norm+head subset), a loop elsewhere (vmap was 2.3×
slower on 2 CPU cores).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from sabma.config import DEFAULT_BMA_SAMPLES
from sabma.posterior.gaussian import GaussianPosterior
from sabma.predict.prefix import cached_split, sample_outputs, vectorised_outputs


@torch.no_grad()
def check_samples(samples: int, name: str = "samples") -> None:
    """Refuse S < 1 (the one check of a BMA sample count; ``name`` says where it came from)."""
    if samples < 1:
        raise ValueError(f"{name} must be at least 1, got {samples}")


def sample_logits(
    posterior: GaussianPosterior,
    weights: Tensor,
    *inputs: Any,
    cache_prefix: bool = True,
    vectorize: bool | None = None,
) -> Tensor:
    """The network's outputs at each row of ``weights`` (S, d): shape (S, batch, classes)."""
    keyword = len(inputs) == 1 and isinstance(inputs[0], Mapping)  # text: a plain loop
    split = cached_split(posterior.model, posterior.names) if cache_prefix and not keyword else None
    if vectorize is None:
        vectorize = posterior.device.type == "cuda" and not keyword
    if vectorize:
        return vectorised_outputs(
            split, posterior.forward_with, posterior.unflatten, weights, *inputs
        )
    if keyword:
        outs = [posterior.forward_with(w, **inputs[0]) for w in weights]
    elif split is None:
        outs = [posterior.forward_with(w, *inputs) for w in weights]
    else:
        outs = sample_outputs(split, posterior.unflatten, weights, *inputs)
    return torch.stack(list(outs))


def sample_log_probs(
    posterior: GaussianPosterior,
    weights: Tensor,
    *inputs: Any,
    cache_prefix: bool = True,
    vectorize: bool | None = None,
) -> Tensor:
    """log softmax of the network at each row of ``weights`` (S, d): shape (S, batch, classes)."""
    logits = sample_logits(
        posterior, weights, *inputs, cache_prefix=cache_prefix, vectorize=vectorize
    )
    return torch.log_softmax(logits, dim=-1)


@torch.no_grad()
def bma_log_probs(
    posterior: GaussianPosterior,
    *inputs: Any,
    samples: int = DEFAULT_BMA_SAMPLES,
    generator: torch.Generator | None = None,
    weights: Tensor | None = None,
    cache_prefix: bool = True,
    vectorize: bool | None = None,
) -> Tensor:
    """log p̄(y | x) of the BMA predictive for one batch, shape (batch, classes).

    Args:
        posterior: the posterior; its model should be in eval mode.
        inputs: the model's positional inputs for this batch.
        samples: S, the number of posterior draws (ignored when ``weights`` is given).
        generator: random generator for the draws.
        weights: (S, d) weight samples to use instead of fresh draws (e.g. the same samples for
            every batch of a test set).
        cache_prefix: run the frozen prefix once per batch (eval mode, fx-traceable networks).
        vectorize: run the S samples through ``torch.func.vmap`` instead of a loop (None: vmap
            on CUDA, a loop elsewhere).
    """
    if weights is None:
        check_samples(samples)
        weights = posterior.sample_weights(samples, generator)
    log_probs = sample_log_probs(
        posterior, weights, *inputs, cache_prefix=cache_prefix, vectorize=vectorize
    )
    return torch.logsumexp(log_probs, dim=0) - math.log(weights.shape[0])


def bma_probs(
    posterior: GaussianPosterior,
    *inputs: Any,
    samples: int = DEFAULT_BMA_SAMPLES,
    generator: torch.Generator | None = None,
    weights: Tensor | None = None,
) -> Tensor:
    """p̄(y | x) of the BMA predictive for one batch (see :func:`bma_log_probs`)."""
    return bma_log_probs(
        posterior, *inputs, samples=samples, generator=generator, weights=weights
    ).exp()
