"""The shared shape of SAM-type optimisers: ascend to a perturbed point, then update from there.

A subclass says *where* to go (:meth:`TwoStepOptimizer.perturbation`); this class keeps the
bookkeeping in one place: back up, perturb, restore, step the base optimiser (which shares
``param_groups`` and ``state``, so LR schedulers, gradient clipping and ``state_dict`` behave as
with any optimiser), and the closure API.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


class TwoStepOptimizer(torch.optim.Optimizer):
    """Base class of SAM-type optimisers (``first_step`` / ``second_step`` / ``step(closure)``)."""

    def __init__(
        self,
        groups: list[dict[str, Any]],
        base_optimizer: type[torch.optim.Optimizer],
        rho: float,
        base_kwargs: dict[str, Any],
    ) -> None:
        if not isinstance(rho, int | float) or not rho >= 0 or not math.isfinite(rho):
            raise ValueError(f"rho must be a finite number >= 0, got {rho!r}")
        super().__init__(groups, {"rho": rho, **base_kwargs})
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        self._link_base()
        self._backup: list[tuple[Tensor, Tensor]] = []
        self._perturbed = False

    def _link_base(self) -> None:
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state
        self.defaults.update(self.base_optimizer.defaults)

    @property
    def rho(self) -> float:
        """The radius ρ (one value for all groups: the ball is joint)."""
        return float(self.param_groups[0]["rho"])

    # --- hooks for subclasses --------------------------------------------------------------------
    def perturbation(self) -> list[tuple[Tensor, Tensor]]:
        """``(parameter, ε)`` pairs of the ascent step, from the current gradients."""
        raise NotImplementedError

    def _on_perturb(self) -> None:
        """Called after θ moved to θ + ε."""

    def _on_restore(self) -> None:
        """Called after θ was restored, before the update."""

    def _after_update(self) -> None:
        """Called after the base optimiser stepped."""

    # --- the step ---------------------------------------------------------------------
    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Move to the perturbed point θ + ε (ε from the current gradients)."""
        if self._perturbed:
            raise RuntimeError("first_step called twice without second_step")
        for param, eps in self.perturbation():
            self._backup.append((param, param.detach().clone()))
            param.add_(eps)
        self._perturbed = True
        self._on_perturb()
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore θ and step the base optimiser with the gradient taken at θ + ε."""
        if not self._perturbed:
            raise RuntimeError("second_step called without first_step")
        for param, value in self._backup:
            param.copy_(value)
        self._backup, self._perturbed = [], False
        self._on_restore()
        self.base_optimizer.step()
        self._opt_called = True  # tells LR schedulers that the optimiser stepped
        self._after_update()
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:  # type: ignore[override]
        """One full step. ``closure`` runs forward and backward and returns the loss; it is called
        twice (at θ and at θ + ε) and should not zero the gradients itself."""
        if closure is None:
            raise ValueError(
                f"{type(self).__name__}.step needs a closure that runs forward and "
                "backward; or call first_step() and second_step() yourself"
            )
        closure = torch.enable_grad()(closure)
        loss = closure()
        self.first_step(zero_grad=True)
        closure()
        self.second_step()
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        self._link_base()
