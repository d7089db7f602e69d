"""The points of a two-pass step where an optimiser built on
:class:`~sabma.step.two_step.TwoStepOptimizer` does its own work (all no-ops here)."""

from __future__ import annotations

from torch import Tensor


class TwoStepHooks:
    """Hooks a SAM-type optimiser overrides; the step sequence that calls them is in
    :class:`~sabma.step.two_step.TwoStepOptimizer`."""

    def perturbation(self) -> list[tuple[Tensor, Tensor]]:
        """``(parameter, ε)`` pairs of the ascent step, from the current gradients."""
        raise NotImplementedError

    def _on_perturb(self) -> None:
        """Called after θ moved to θ + ε, before the second pass of a two-pass step."""

    def _on_restore(self) -> None:
        """Called after θ was restored (the step's last pass is over)."""

    def _before_reused_pass(self) -> None:
        """Called before the single pass of a lazy step (θ is at θ + ε_last)."""

    def _before_first_pass(self) -> None:
        """Called by :meth:`step` before the first pass of a fresh step (bSAM moves to a noisy
        point there)."""

    #: whether the first pass of a fresh step is taken at θ itself (then ρ = 0 needs one pass)
    first_pass_at_theta: bool = True

    def _before_restore(self, update: bool) -> None:
        """Called when the step's last pass is over, while θ is still at θ + ε (``update``:
        whether the base optimiser will step)."""

    def _before_update(self) -> None:
        """Called after θ was restored, just before the base optimiser steps."""

    def _after_update(self) -> None:
        """Called after the base optimiser stepped."""

    def _pass_begin(self) -> None:
        """Called before each forward/backward pass of :meth:`passes` and :meth:`step` (the
        drop-in SA-BMA writes the sample into the model there)."""

    def _pass_end(self) -> None:
        """Called after each pass's backward (the drop-in SA-BMA moves the model's gradient to
        θ there)."""

    def _after_step(self) -> None:
        """Called when a step is over (updated or abandoned)."""
