"""The per-step side of the natural-gradient variance in SA-BMA (VI is SA-BMA at ρ = 0): which
pass feeds the ``reparam`` curvature estimate, and when h is applied or the ``fisher`` curvature
refreshed. The rule itself is :mod:`sabma.variance.natural`."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from sabma.posterior.gaussian import GaussianPosterior
from sabma.variance.natural import Curvature, Source
from sabma.variance.state import VarianceState


class NaturalVarianceSteps:
    """Mixed into :class:`~sabma.SABMA`: the curvature state h, its update count, and the
    estimate of the step in progress."""

    posterior: GaussianPosterior
    natural: VarianceState | None
    _natural_state: dict[str, Any]
    _curvature_estimate: Tensor | None

    def state_dict(self) -> dict[str, Any]:
        """The base optimiser's state, the lazy step's, and the natural variance's h."""
        state: dict[str, Any] = super().state_dict()  # type: ignore[misc]
        state["natural_variance"] = dict(self._natural_state)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        natural = state_dict.pop("natural_variance", {})
        super().load_state_dict(state_dict)  # type: ignore[misc]
        like = self.posterior.log_std
        self._natural_state = {
            k: v.to(like) if isinstance(v, Tensor) else v for k, v in natural.items()
        }

    def _observes(self, source: Source) -> bool:
        """Whether this step's ``source`` pass feeds the per-step curvature estimate."""
        n = self.natural
        return (
            n is not None
            and n.options.curvature is Curvature.REPARAM
            and (n.options.source is source)
        )

    def _reparam_estimate(self) -> Tensor:
        """h after the reparameterisation estimate from the mean's current gradient, at the
        current (possibly perturbed) σ."""
        assert self.natural is not None and self.posterior.mean.grad is not None
        h = self._curvature()
        if h is None:
            h = self.natural.initial_curvature()
        return self.natural.observe(h, self.posterior.mean.grad, self.posterior.std.detach())

    def _variance_state(self) -> dict[str, Any]:
        """h and the update count of the natural variance (kept apart from the base
        optimiser's per-parameter state, whose layout it owns)."""
        return self._natural_state

    def _curvature(self) -> Tensor | None:
        """h, the curvature state (None before the first estimate)."""
        return self._variance_state().get("curvature")

    def _update_variance(self) -> bool:
        """Apply this step's curvature estimate, or refresh the Fisher when due; returns
        whether σ (or D) was set."""
        assert self.natural is not None
        state = self._variance_state()
        state["updates"] = updates = int(state.get("updates", 0)) + 1
        moved = False
        if self._curvature_estimate is not None:
            state["curvature"] = self._curvature_estimate
            self._curvature_estimate = None
            self.natural.apply(state["curvature"])
            moved = True
        options = self.natural.options
        if options.curvature is Curvature.FISHER and (updates - 1) % options.refresh_every == 0:
            state["curvature"] = self.natural.refresh(state.get("curvature"))
            moved = True
        return moved

    def refresh_curvature(self) -> None:
        """Recompute the ``fisher`` curvature (and the factor) now, outside the schedule."""
        if self.natural is None or self.natural.options.curvature is not Curvature.FISHER:
            raise RuntimeError(
                "refresh_curvature needs variance=NaturalVariance(curvature='fisher')"
            )
        state = self._variance_state()
        state["curvature"] = self.natural.refresh(state.get("curvature"))
