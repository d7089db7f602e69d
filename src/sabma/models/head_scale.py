"""The scale of the features a network feeds its classification head, and the automatic prior
variance of a new head that follows from it: α = HEAD_LOGIT_VAR / E‖φ(x)‖², so that each logit's
prior standard deviation is about 7 whatever the features' scale."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from sabma.models import inputs
from sabma.models.inputs import Inputs
from sabma.posterior.gaussian import GaussianPosterior

log = logging.getLogger(__name__)

#: The automatic head prior (``prior.head_var = 0``) gives each logit this prior variance at the
#: pre-trained features: α = HEAD_LOGIT_VAR / E‖φ(x)‖² (a logit's prior std ≈ 7: weakly
#: informative, and the same statement about the predictions whatever the features' scale).
HEAD_LOGIT_VAR = 50.0


@torch.no_grad()
def head_feature_scale(
    posterior: GaussianPosterior,
    head: str,
    x: Inputs | Iterable[Any],
    max_examples: int | None = None,
) -> float:
    """E‖φ(x)‖² + 1 over ``x`` (inputs, or a loader's batches: at most ``max_examples``): the
    squared norm of the features entering the head module (its input; + 1 for the bias) at the
    posterior mean, network in eval mode."""
    module = dict(posterior.model.named_modules())[head]
    norms: list[Tensor] = []

    def record(_module: nn.Module, args: tuple[Tensor, ...]) -> None:
        norms.append(args[0].detach().flatten(1).square().sum(1).float().cpu())

    handle = module.register_forward_pre_hook(record)
    was_training = posterior.model.training
    posterior.eval()
    try:
        for part in inputs.input_batches(x, 64, max_examples):
            inputs.call(posterior.mean_forward, inputs.to_device(part, posterior.device))
    finally:
        handle.remove()
        posterior.train(was_training)
    if not norms:
        raise ValueError("no inputs to measure the head's features on (an empty loader?)")
    return float(torch.cat(norms).mean()) + 1.0


def head_prior_variance(
    head_var: float,
    posterior: GaussianPosterior,
    head: str,
    x: Inputs | Iterable[Any],
    max_examples: int | None = None,
) -> float:
    """α: ``prior.head_var``, or with 0 the automatic HEAD_LOGIT_VAR / E‖φ‖²."""
    if head_var < 0:
        raise ValueError(f"prior.head_var must be >= 0 (0: automatic), got {head_var}")
    if head_var > 0:
        return head_var
    alpha = HEAD_LOGIT_VAR / head_feature_scale(posterior, head, x, max_examples)
    log.info("automatic head prior: α = %.3g", alpha)
    return alpha
