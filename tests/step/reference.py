"""A plain SAM written out by hand, the reference for SAM and for SA-BMA's reduction to SAM."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.functional import cross_entropy


def manual_sam(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    lr: float,
    momentum: float,
    rho: float,
) -> torch.Tensor:
    """``steps`` SAM steps with SGD momentum; returns the flat parameters after them."""
    params = list(model.parameters())
    buffers = [torch.zeros_like(p) for p in params]
    for _ in range(steps):
        grads = torch.autograd.grad(cross_entropy(model(x), y), params)
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        eps = [rho * g / norm for g in grads]
        with torch.no_grad():
            for p, e in zip(params, eps, strict=True):
                p.add_(e)
        grads = torch.autograd.grad(cross_entropy(model(x), y), params)
        with torch.no_grad():
            for p, e, g, buf in zip(params, eps, grads, buffers, strict=True):
                p.sub_(e)
                buf.mul_(momentum).add_(g)
                p.sub_(lr * buf)
    return torch.cat([p.detach().reshape(-1) for p in params])
