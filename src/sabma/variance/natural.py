"""`NaturalVariance`: the settings and the updates of a natural-gradient posterior variance.

An optimiser that trains the mean of a :class:`~sabma.GaussianPosterior` (SA-BMA, or VI with
ρ = 0) hands the variance to this rule instead of a gradient step on log σ:

* a per-coordinate curvature h ≈ diag E_q[∇²ℓ̄] is kept, from one of two estimates:
  ``"reparam"`` — every step, ĥ = g ⊙ z₁/σ from the step's own gradient, averaged with IVON's
  positivity-preserving rule at rate 1 − β₂; ``"fisher"`` — every ``refresh_every`` updates, the
  diagonal Fisher of per-example gradients with labels sampled from the model on the training
  inputs (all of them in few-shot transfer), mixed into h with weight 1 − ``refresh_beta``;
* σ² = T / (λ (h + δ)), δ = diag(Σ_p⁻¹)/λ (:mod:`sabma.variance.rules`);
* with ``"fisher"`` curvature the low-rank factor D is recomputed at every refresh as the K
  directions in which the diagonal under-states the posterior's variance
  (:mod:`sabma.variance.factor`); with ``"reparam"`` it stays where it was initialised (e.g. from
  SWAG), since a one-sample estimate of a d×d curvature cannot place it.

The mean is left to the optimiser (its base optimiser, with the prior's pull
(1/λ)·Σ_p⁻¹(μ − μ_p) added to its gradient). docs/method.md §3 derives the fixed point.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import InitVar, dataclass
from enum import StrEnum
from typing import Any

from torch import Tensor

from sabma.config.sections import OptimConfig
from sabma.models.inputs import Inputs
from sabma.models.inputs import count as inputs_count
from sabma.variance.options import VarianceOptions
from sabma.variance.rules import (
    check_rule,
)


class Curvature(StrEnum):
    """Where the curvature estimate h comes from."""

    REPARAM = "reparam"
    """ĥ = g ⊙ z₁/σ from every step's gradient, averaged at rate 1 − β₂ (IVON's estimate)."""
    FISHER = "fisher"
    """The diagonal Fisher (labels sampled from the model) of the training inputs, recomputed
    every ``refresh_every`` updates; also places the low-rank factor."""


class Source(StrEnum):
    """Which pass of a two-pass step feeds the ``reparam`` estimate."""

    CLEAN = "clean"
    """The first pass, at θ: the curvature of the posterior itself."""
    PERTURBED = "perturbed"
    """The second pass, at θ + ε: the curvature at the adversarial posterior (a sharpness-aware
    variance: flat directions of the worst nearby posterior get the variance)."""


_VARIANCE = VarianceOptions()

#: Per-example gradients kept for the factor at a refresh, in floats (see ``factor_floats``).
FACTOR_FLOATS = 1 << 26


@dataclass
class NaturalVariance:
    """Settings of the natural-gradient variance. The defaults are the trainer's
    (:class:`sabma.variance.options.VarianceOptions`, the settings docs/results.md measured).

    Args:
        ess: λ, the effective sample size (the number of training examples for the posterior);
            0: the size of ``data``'s dataset (``len(data.dataset)`` of a ``DataLoader``).
        temperature: T (1: the posterior; < 1: a cold posterior, narrower by √T).
        curvature: ``"reparam"`` or ``"fisher"`` (see :class:`Curvature`).
        source: for ``"reparam"``: ``"clean"`` or ``"perturbed"`` (see :class:`Source`).
        beta2: for ``"reparam"``: the average's memory (rate 1 − β₂ per step).
        data: for ``"fisher"``: the training data — a ``DataLoader`` (or any iterable of
            batches: tensors, ``(inputs, labels)`` tuples or dicts of tensors; it is streamed, at
            most ``max_examples`` inputs per refresh, and labels are never read: they are
            sampled), or the inputs themselves as a tensor or a dict of tensors.
        refresh_every: for ``"fisher"``: updates between refreshes (the first comes after the
            first update); 0: every ``refresh_epochs`` passes over ``data`` (``len(data)``
            batches of a loader; one update for in-memory inputs).
        refresh_epochs: for ``"fisher"`` with ``refresh_every=0``: passes over ``data``
            between refreshes (the trainer's ``method.variance.refresh_epochs``).
        refresh_beta: for ``"fisher"``: weight of the old h when a refresh comes in (0: replace).
        label_samples: for ``"fisher"``: label draws per example.
        max_examples: for ``"fisher"``: at most this many examples per refresh (a seeded random
            subset of in-memory inputs; a loader's first ones); the low-rank step costs
            O(d·M²) in M = examples × draws.
        batch_size: for ``"fisher"``: examples per vectorised per-example pass.
        factor_floats: for ``"fisher"``: at most this many floats of per-example gradients
            are kept for the factor (max(this // d, 2K) rows, a random subset), and a block of
            per-example gradients holds at most a quarter of it (fewer examples per pass); the
            diagonal still uses every row, streamed. The default (2²⁶, 256 MB) keeps all 256
            rows up to d ≈ 260,000 and changes nothing at the default subset; at d = 1.9·10⁶ it
            keeps 36 rows and passes 9 examples at a time, so the refresh's time and memory stop
            growing with M·d.
        inputs: the former name of ``data`` (in-memory inputs).
    """

    ess: float = 0.0
    temperature: float = _VARIANCE.temperature
    curvature: str = _VARIANCE.curvature
    source: str = _VARIANCE.curvature_source
    beta2: float = _VARIANCE.curvature_beta2
    data: Inputs | Iterable[Any] | None = None
    refresh_every: int = 0
    refresh_epochs: int = _VARIANCE.refresh_epochs
    refresh_beta: float = 0.0
    label_samples: int = _VARIANCE.fisher_samples
    max_examples: int = _VARIANCE.fisher_examples
    batch_size: int = OptimConfig.batch_size
    factor_floats: int = FACTOR_FLOATS
    inputs: InitVar[Inputs | None] = None

    def __post_init__(self, inputs: Inputs | None) -> None:
        if inputs is not None:
            if self.data is not None:
                raise ValueError("pass the training data once: data= (inputs= is its old name)")
            self.data = inputs
        if self.ess == 0:
            self.ess = _dataset_size(self.data)
        check_rule(self.ess, self.temperature)
        try:
            self.curvature = Curvature(self.curvature)
            self.source = Source(self.source)
        except ValueError as err:
            raise ValueError(
                f"{err}; curvature is one of {[c.value for c in Curvature]}, "
                f"source one of {[s.value for s in Source]}"
            ) from None
        if not 0.0 <= self.beta2 < 1.0 or not 0.0 <= self.refresh_beta < 1.0:
            raise ValueError(
                f"beta2 and refresh_beta must lie in [0, 1), got {self.beta2}, {self.refresh_beta}"
            )
        if not isinstance(self.refresh_epochs, int) or self.refresh_epochs < 1:
            raise ValueError(f"refresh_epochs must be an integer >= 1, got {self.refresh_epochs!r}")
        if self.refresh_every == 0:
            self.refresh_every = self.refresh_epochs * _batches_per_pass(self.data)
        for name in (
            "refresh_every",
            "label_samples",
            "max_examples",
            "batch_size",
            "factor_floats",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.curvature is Curvature.FISHER and self.data is None:
            raise ValueError(
                "curvature='fisher' needs the training data (data=train_loader); or "
                "curvature='reparam' to estimate the curvature from the training steps"
            )


def _dataset_size(data: Inputs | Iterable[Any] | None) -> float:
    """λ's default: the number of training examples behind ``data``."""
    if isinstance(data, Tensor | Mapping):
        return float(inputs_count(data))
    dataset = getattr(data, "dataset", None)
    try:
        return float(len(dataset))  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(
            "ess= is needed: the number of training examples (it could not be read from data="
            + (f" of type {type(data).__name__}" if data is not None else ", which is not given")
            + ")"
        ) from None


def _batches_per_pass(data: Inputs | Iterable[Any] | None) -> int:
    """Updates in one pass over ``data``: ``len(data)`` of a loader, 1 otherwise."""
    if data is None or isinstance(data, Tensor | Mapping):
        return 1
    try:
        return max(1, len(data))  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(
            f"refresh_every= is needed: data of type {type(data).__name__} has no length in batches"
        ) from None


def natural_options(
    variance: NaturalVariance | str | None,
    ess: float | None,
    kl_weight: float,
    data: Inputs | Iterable[Any] | None = None,
) -> NaturalVariance | None:
    """The natural-variance settings (None: the gradient path), after checks: the default is
    ``NaturalVariance(ess=ess, data=data)`` (the Fisher of ``data``, λ its size)."""
    if isinstance(variance, NaturalVariance):
        options: NaturalVariance | None = variance
    elif variance == "gradient":
        options = None
    elif variance is None or variance == "natural":
        if data is None:
            raise ValueError(
                "SABMA sets the variance from the Fisher of the training data: pass "
                "data=train_loader; or variance=NaturalVariance(ess=N, curvature='reparam') to "
                "estimate it from the steps; or variance='gradient'"
            )
        options = NaturalVariance(ess=ess or 0.0, data=data)
    else:
        raise ValueError(
            f"variance must be a NaturalVariance, 'natural' or 'gradient', got {variance!r}"
        )
    if options is not None and kl_weight > 0:
        raise ValueError(
            "kl_weight applies to variance='gradient'; the natural-gradient variance weighs "
            "the prior by 1/ess"
        )
    return options
