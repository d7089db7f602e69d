"""Bayesian model averaging: p(y | x, D) ≈ (1/S) Σ_s softmax(f(x; w_s)),  w_s ~ q_θ.

Probabilities are averaged *before* the log, over samples of the same inputs: the samples are
iterated inside each batch, so a shuffled loader can never misalign them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from sabma.posterior.gaussian import GaussianPosterior


@torch.no_grad()
def bma_log_probs(
    posterior: GaussianPosterior,
    *inputs: Any,
    samples: int = 30,
    generator: torch.Generator | None = None,
    weights: Tensor | None = None,
) -> Tensor:
    """log p̄(y | x) of the BMA predictive for one batch, shape (batch, classes).

    Args:
        posterior: the posterior; its model should be in eval mode.
        inputs: the model's positional inputs for this batch.
        samples: S, the number of posterior draws (ignored when ``weights`` is given).
        generator: random generator for the draws.
        weights: (S, d) weight samples to use instead of fresh draws (e.g. the same samples for
            every batch of a test set).
    """
    if weights is None:
        if samples < 1:
            raise ValueError(f"samples must be at least 1, got {samples}")
        weights = posterior.sample_weights(samples, generator)
    log_probs = torch.stack(
        [torch.log_softmax(posterior.forward_with(w, *inputs), dim=-1) for w in weights]
    )
    return torch.logsumexp(log_probs, dim=0) - math.log(weights.shape[0])


def bma_probs(
    posterior: GaussianPosterior,
    *inputs: Any,
    samples: int = 30,
    generator: torch.Generator | None = None,
    weights: Tensor | None = None,
) -> Tensor:
    """p̄(y | x) of the BMA predictive for one batch (see :func:`bma_log_probs`)."""
    return bma_log_probs(
        posterior, *inputs, samples=samples, generator=generator, weights=weights
    ).exp()
