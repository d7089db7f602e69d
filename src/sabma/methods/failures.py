"""What stops a step or a run: a non-finite loss (the step is undone, θ unchanged) and settings
that cannot train at the learning rate (an error for a run, a failed candidate for a search)."""

from __future__ import annotations

import torch
from torch import Tensor


class UnstableSetting(ValueError):
    """The settings cannot train at this learning rate (the prior term or a coupling would
    diverge): an error for a single run, a candidate that failed for a search."""


class NonFiniteLoss(FloatingPointError):
    """A training loss was NaN or infinite; raised before any update (θ unchanged)."""


def finite(loss: Tensor) -> Tensor:
    """``loss``, or :class:`NonFiniteLoss` when it is NaN or infinite (before ``backward``)."""
    if not bool(torch.isfinite(loss).all()):
        raise NonFiniteLoss(f"non-finite training loss ({float(loss.detach().sum())})")
    return loss


def abandon_step(optimizer: torch.optim.Optimizer) -> None:
    """Undo a step interrupted by :class:`NonFiniteLoss`: θ back where the step began."""
    abandon = getattr(optimizer, "abandon_step", None)
    if callable(abandon):
        abandon()
    optimizer.zero_grad()
