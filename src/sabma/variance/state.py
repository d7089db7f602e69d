"""The natural-gradient variance rule applied to one posterior with one prior
(:class:`VarianceState`): σ from the curvature h, the prior's pull on the mean, and the refresh of
h and D from the Fisher of the training inputs. The settings are :mod:`sabma.variance.natural`."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian
from sabma.variance.factor import residual_factor
from sabma.variance.fisher_gradients import fisher_sketch
from sabma.variance.natural import NaturalVariance
from sabma.variance.rules import (
    curvature_from_variance,
    ivon_update,
    natural_variance,
    prior_delta,
    reparam_hessian,
)


class VarianceState:
    """The rule applied to one posterior with one prior: the pieces an optimiser calls."""

    def __init__(
        self, options: NaturalVariance, posterior: GaussianPosterior, prior: LowRankGaussian
    ) -> None:
        if prior.dim != posterior.dim:
            raise ValueError(f"the prior has dimension {prior.dim}, the posterior {posterior.dim}")
        self.options = options
        self.posterior = posterior
        like = posterior.mean.detach()
        self.prior_mean = prior.mean.detach().to(like)
        self.prior = LowRankGaussian(
            self.prior_mean, prior.var.detach().to(like), prior.factor.detach().to(like)
        )
        self.prior_precision = self.prior.precision_diag()
        self.delta = prior_delta(self.prior_precision, options.ess)

    # --- the rule ---------------------------------------------------------------------------
    def variance(self, h: Tensor) -> Tensor:
        """σ² = T / (λ (max(h, 0) + δ)): never wider than the tempered prior (the GGN is positive
        semi-definite; a negative h is the one-sample estimate's noise, and near h = −δ it would
        send σ to infinity — measured: a tiny CNN diverged at lr 0.5 without the floor)."""
        o = self.options
        return natural_variance(h.clamp_min(0.0), o.ess, self.delta, o.temperature)

    def initial_curvature(self) -> Tensor:
        """The h at which the rule reproduces the posterior's current σ (0 where that σ is
        wider than the prior allows: the first update narrows it to the prior's)."""
        o = self.options
        var = torch.exp(2.0 * self.posterior.log_std.detach())
        return curvature_from_variance(var, o.ess, self.delta, o.temperature)

    def observe(self, h: Tensor, grad: Tensor, std: Tensor) -> Tensor:
        """h after one ``reparam`` estimate from the mean's gradient at the posterior of ``std``
        (z₁: the posterior's kept noise)."""
        h_hat = reparam_hessian(grad, self.posterior.noise_diag, std)
        return ivon_update(h, h_hat, self.options.beta2, self.delta)

    def prior_pull(self) -> Tensor:
        """(1/λ)·Σ_p⁻¹(μ − μ_p): the gradient of (1/λ)·E_q[−log p(w)] with respect to μ."""
        diff = self.posterior.mean.detach() - self.prior_mean
        if not self.prior.rank:  # in place: one d-vector instead of three
            return diff.div_(self.prior.var).div_(self.options.ess)
        return self.prior.precision_matvec(diff) / self.options.ess

    @torch.no_grad()
    def apply(self, h: Tensor) -> None:
        """Set the posterior's log σ from h."""
        self.posterior.log_std.copy_(0.5 * torch.log(self.variance(h)))

    @torch.no_grad()
    def refresh(self, h: Tensor | None) -> Tensor:
        """A ``fisher`` refresh: the diagonal Fisher of the training inputs mixed into h (the
        first refresh replaces the initial h), σ set from it, and the factor recomputed.
        Returns the new h."""
        o = self.options
        assert o.data is not None
        rank, d = self.posterior.rank, self.posterior.dim
        sketch = fisher_sketch(
            self.posterior,
            o.data,
            max_rows=max(o.factor_floats // d, 2 * rank),
            label_samples=o.label_samples,
            max_examples=o.max_examples,
            # a block of per-example gradients holds at most a quarter of the budget
            batch_size=max(1, min(o.batch_size, o.factor_floats // (4 * d * o.label_samples))),
        )
        h_data = sketch.diagonal.to(self.delta)
        h_new = h_data if h is None else o.refresh_beta * h + (1.0 - o.refresh_beta) * h_data
        self.apply(h_new)
        if rank:
            self.posterior.factor.copy_(self.factor(sketch.rows.to(self.delta)))
        return h_new

    def factor(self, grads: Tensor) -> Tensor:
        """D from per-example Fisher gradients (M, d): data precision (λ/(T·M))·GᵀG."""
        o = self.options
        var = torch.exp(2.0 * self.posterior.log_std.detach())
        scale = math.sqrt(o.ess / (o.temperature * grads.shape[0]))
        data_sqrt = (var.sqrt() * scale).unsqueeze(1) * grads.T
        prior_share = var * self.prior_precision / o.temperature
        return residual_factor(
            var,
            prior_share,
            data_sqrt,
            self.posterior.rank,
            previous=self.posterior.factor.detach(),
        )
