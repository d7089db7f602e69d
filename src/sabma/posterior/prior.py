"""The isotropic prior over a Bayesian subset: N(w_pre, τ² I) off the head, N(0, α I) on it
(docs/method.md §5). Other kinds (SWAG moments, a Pre-Train-Your-Loss file) are in
:mod:`sabma.priors`; the drop-in optimiser and the trainer both build this one here."""

from __future__ import annotations

import torch
from torch import Tensor

from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian


def head_mask(posterior: GaussianPosterior, head: str) -> Tensor:
    """Boolean (d,) mask of the subset coordinates that belong to the head module ``head``."""
    prefix = f"{head}."
    flags = [
        torch.full((n,), name.startswith(prefix), dtype=torch.bool)
        for name, n in zip(posterior.names, posterior.numels, strict=True)
    ]
    return torch.cat(flags).to(posterior.mean.device)


def isotropic_prior(
    w_pre: Tensor, is_head: Tensor, norm_std: float, head_var: float
) -> LowRankGaussian:
    """N(w_pre, τ² I) off the head, N(0, α I) on it."""
    if not norm_std > 0 or not head_var > 0:
        raise ValueError(f"prior norm_std and head_var must be > 0, got {norm_std}, {head_var}")
    mean = torch.where(is_head, torch.zeros_like(w_pre), w_pre)
    var = torch.where(
        is_head, torch.full_like(w_pre, head_var), torch.full_like(w_pre, norm_std**2)
    )
    return LowRankGaussian(mean, var, w_pre.new_zeros(w_pre.numel(), 0))
