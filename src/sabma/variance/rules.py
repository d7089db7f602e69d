"""The natural-gradient variance rule (VON / IVON: Khan et al. 2018, Shen et al. 2024), as pure
functions.

For the tempered objective of :mod:`sabma.variance` (docs/method.md §3),

    J(θ) = E_q[ℓ̄(w)] + (1/λ)·(E_q[−log p(w)] − T·H(q)),

the Gaussian that minimises J has precision Σ⁻¹ = (λ·E_q[∇²ℓ̄] + Σ_p⁻¹)/T. Its diagonal, with a
per-coordinate curvature estimate h ≈ diag E_q[∇²ℓ̄] (per example: ℓ̄ is the *mean* loss), is

    σ² = T / (λ (h + δ)),    δ = diag(Σ_p⁻¹) / λ.

λ is the effective sample size (N, the number of training examples, by default) and T the
temperature (T = 1: the posterior; T < 1: a cold posterior).
"""

from __future__ import annotations

import torch
from torch import Tensor


def reparam_hessian(grad: Tensor, noise: Tensor, std: Tensor) -> Tensor:
    """ĥ = g ⊙ z₁ / σ: the reparameterisation estimate of diag E_q[∇²ℓ̄].

    With w = μ + σ ⊙ z₁ + D z₂ and g = ∇ℓ̄(w), Stein's lemma gives
    E[gᵢ z₁ᵢ] = σᵢ E[∂²ℓ̄/∂wᵢ²], so E[ĥ] = diag E_q[∇²ℓ̄] (one draw: unbiased, noisy)."""
    return grad * noise / std


def ivon_update(h: Tensor, h_hat: Tensor, beta2: float, delta: Tensor | float) -> Tensor:
    """IVON's positivity-preserving average of the curvature estimate:

        h ← β₂ h + (1 − β₂) ĥ + ½ (1 − β₂)² (h − ĥ)² / (h + δ).

    The last term keeps h + δ > 0 whatever the sign of ĥ (Shen et al. 2024, Eq. 6)."""
    if not 0.0 <= beta2 < 1.0:
        raise ValueError(f"beta2 must lie in [0, 1), got {beta2!r}")
    rate = 1.0 - beta2
    correction = 0.5 * rate**2 * (h - h_hat).square() / (h + delta)
    return beta2 * h + rate * h_hat + correction


def natural_variance(
    h: Tensor, ess: float, delta: Tensor | float, temperature: float = 1.0
) -> Tensor:
    """σ² = T / (λ (h + δ))."""
    return temperature / (ess * (h + delta))


def curvature_from_variance(
    var: Tensor, ess: float, delta: Tensor | float, temperature: float = 1.0
) -> Tensor:
    """The h at which :func:`natural_variance` gives ``var`` (floored at 0): the curvature state
    that starts a run at a chosen initial posterior."""
    return (temperature / (ess * var) - delta).clamp_min(0.0)


def check_rule(ess: float, temperature: float) -> None:
    """Refuse an effective sample size or temperature that is not a positive finite number."""
    for name, value in (("ess", ess), ("temperature", temperature)):
        if not isinstance(value, int | float) or not 0 < value < float("inf"):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def prior_delta(prior_precision: Tensor, ess: float) -> Tensor:
    """δ = diag(Σ_p⁻¹) / λ; refuses a prior without precision somewhere (δ = 0 leaves σ
    unbounded where the data carry no curvature)."""
    if not bool((prior_precision > 0).all()) or not bool(torch.isfinite(prior_precision).all()):
        raise ValueError("the prior's precision must be positive and finite on every coordinate")
    return prior_precision / ess
