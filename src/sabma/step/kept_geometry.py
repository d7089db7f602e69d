"""What the SA-BMA step keeps between steps while σ and D keep their values (between refreshes
of the natural variance): q_θ with its Woodbury pieces (the capacitance and diag Σ⁻¹, O(dK²)) for
the Fisher ball, and the posterior's σ = e^{log σ}.

Both are keyed by the tensors' version counters, so any in-place change made outside a step drops
them. A step itself moves log σ (and D, where perturbed) to θ + ε and copies it back: the same
values under new versions. Where they were kept at the versions the step started from and the
update did not set σ or D, they are kept on under the new versions."""

from __future__ import annotations

import torch
from torch import Tensor

from sabma.posterior.gaussian import GaussianPosterior, content_key
from sabma.posterior.lowrank import LowRankGaussian
from sabma.step.kl_ball import detached_gaussian


class KeptGeometry:
    """Mixed into :class:`~sabma.SABMA` (before :class:`~sabma.step.two_step.TwoStepOptimizer`,
    whose ``_move`` it wraps)."""

    posterior: GaussianPosterior
    #: (key of log σ and D, q_θ)
    _kept_geometry: tuple[tuple[int, ...], LowRankGaussian] | None
    #: the keys of (log σ, D) and of log σ just before the step moved θ
    _keys_before_move: tuple[tuple[int, ...], tuple[int, ...]] | None
    #: whether this step's update set σ or D
    _variance_moved: bool

    def _forget_geometry(self) -> None:
        """Keep nothing: the next step computes q_θ again (a new optimiser, a loaded state)."""
        self._kept_geometry = None
        self._keys_before_move = None
        self._variance_moved = False

    def _variance_key(self) -> tuple[int, ...]:
        return content_key(self.posterior.log_std, self.posterior.factor)

    def _geometry(self) -> LowRankGaussian:
        """q_θ for the Fisher ball, computed again only when σ or D changed."""
        key = self._variance_key()
        if self._kept_geometry is None or self._kept_geometry[0] != key:
            self._kept_geometry = (key, detached_gaussian(self.posterior))
        return self._kept_geometry[1]

    def _move(self, eps: list[tuple[Tensor, Tensor]]) -> None:
        self._keys_before_move = (self._variance_key(), content_key(self.posterior.log_std))
        super()._move(eps)  # type: ignore[misc]

    @torch.no_grad()
    def _keep_geometry_through_step(self) -> None:
        """At the end of a step: keep q_θ and σ under log σ's and D's new versions where the
        step only moved them and put them back."""
        keys, self._keys_before_move = self._keys_before_move, None
        geometry, self._kept_geometry = self._kept_geometry, None
        if keys is not None and not self._variance_moved:
            if geometry is not None and geometry[0] == keys[0]:
                self._kept_geometry = (self._variance_key(), geometry[1])
            self.posterior.log_std_restored(keys[1])
        self._variance_moved = False
