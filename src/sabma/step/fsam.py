"""Fisher SAM (Kim et al., 2022): the SAM ball measured in the Fisher geometry of the predictive.

    ε* = ρ f⁻¹ g / √(gᵀ f⁻¹ g),   f = 1 + η · diag(F̂),   diag(F̂) ≈ g ⊙ g

with F̂ the empirical Fisher of p(y | x, w) estimated from the mini-batch gradient. At η = 0 this
is SAM exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from sabma.step.sam import SAM


class FSAM(SAM):
    """SAM with a diagonal Fisher preconditioner on the ascent step (``eta`` = η)."""

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD,
        rho: float = 0.05,
        eta: float = 1.0,
        *,
        model: nn.Module | None = None,
        **base_kwargs: Any,
    ) -> None:
        if not eta >= 0:
            raise ValueError(f"eta must be >= 0, got {eta!r}")
        super().__init__(params, base_optimizer, rho, model=model, **base_kwargs)
        self.eta = eta

    def perturbation(self) -> list[tuple[Tensor, Tensor]]:
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not params:
            return []
        directions = [p.grad / (1.0 + self.eta * p.grad * p.grad) for p in params]
        sq_norm = torch.stack([(p.grad * d).sum() for p, d in zip(params, directions, strict=True)])
        scale = self.rho / (sq_norm.sum().sqrt() + 1e-12)
        return [(p, d * scale) for p, d in zip(params, directions, strict=True)]
