"""SAM (Foret et al., 2021): sharpness-aware minimisation of point estimates.

    ε* = ρ g / ‖g‖  (one global L2 norm over all parameters), update with ∇L(w + ε*).

The same two-step / closure shape as :class:`~sabma.SABMA`, so the two are drop-in replacements
for each other. Pass ``model`` to keep normalization running statistics from being updated by the
second pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from sabma.step.two_step import TwoStepOptimizer


class SAM(TwoStepOptimizer):
    """Sharpness-aware minimisation around a base optimiser.

    Args:
        params: the parameters to train (an iterable of tensors or of parameter-group dicts).
        base_optimizer: the optimiser class for the update.
        rho: radius ρ of the Euclidean ball.
        model: if given, its normalization running statistics are restored after the second pass.
        perturb_every: k > 1 forms ε from a fresh gradient every k-th :meth:`step` only and
            reuses it in between (see :mod:`sabma.step.two_step`).
        **base_kwargs: passed to ``base_optimizer``.
    """

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD,
        rho: float = 0.05,
        *,
        model: nn.Module | None = None,
        perturb_every: int = 1,
        **base_kwargs: Any,
    ) -> None:
        groups = list(params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        super().__init__(groups, base_optimizer, rho, base_kwargs, perturb_every, stats_model=model)

    def perturbation(self) -> list[tuple[Tensor, Tensor]]:
        params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        if not params:
            return []
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
        scale = self.rho / (norm + 1e-12)
        return [(p, p.grad * scale) for p in params]
