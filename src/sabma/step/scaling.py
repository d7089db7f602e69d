"""fp16 loss scaling around a two-pass step: the first pass's gradient is unscaled by hand before
it forms ε (the scaler's own ``unscale_`` is kept for the gradient that updates θ)."""

from __future__ import annotations

import torch
from torch import Tensor


def parameter_grads(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    """The gradients the optimiser holds."""
    return [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]


def all_finite(grads: list[Tensor]) -> bool:
    return all(bool(torch.isfinite(g).all()) for g in grads)


@torch.no_grad()
def unscale_first_pass(
    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None
) -> bool:
    """Divide the first pass's gradient by the loss scale; False when it overflowed."""
    if scaler is None or not scaler.is_enabled():
        return True
    grads = parameter_grads(optimizer)
    if not all_finite(grads):
        return False
    torch._foreach_mul_(grads, 1.0 / scaler.get_scale())
    return True
