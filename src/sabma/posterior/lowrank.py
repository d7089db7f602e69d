"""Diagonal-plus-low-rank Gaussians, N(μ, diag(v) + D Dᵀ), with O(d K²) algebra.

Every formula here avoids forming a d×d matrix. With Λ = diag(v) and the K×K *capacitance*
C = I_K + Dᵀ Λ⁻¹ D, the Woodbury identity and the matrix determinant lemma give

    Σ⁻¹ x     = Λ⁻¹ x − Λ⁻¹ D C⁻¹ Dᵀ Λ⁻¹ x
    diag(Σ⁻¹) = 1/v − rowsum((Λ⁻¹ D C⁻¹) ⊙ (Λ⁻¹ D))
    log|Σ|    = Σᵢ log vᵢ + log|C|

and the closed-form KL divergence between two such Gaussians (of any ranks) follows from
tr(Σ₀⁻¹ Σ₁) = Σᵢ diag(Σ₀⁻¹)ᵢ v₁ᵢ + tr(D₁ᵀ Σ₀⁻¹ D₁).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor


@dataclass(frozen=True, eq=False)
class LowRankGaussian:
    """N(mean, diag(var) + factor factorᵀ) over a flat vector of length d.

    Attributes:
        mean: (d,) mean vector μ.
        var: (d,) positive diagonal variances (σ², not σ).
        factor: (d, K) low-rank factor D; K = 0 gives a diagonal Gaussian.

    The tensors may carry autograd history: every method is differentiable.
    """

    mean: Tensor
    var: Tensor
    factor: Tensor

    def __post_init__(self) -> None:
        d = self.mean.shape[0]
        if self.mean.dim() != 1 or self.var.shape != (d,):
            raise ValueError(
                f"mean and var must both have shape (d,), got {tuple(self.mean.shape)}"
                f" and {tuple(self.var.shape)}"
            )
        if self.factor.dim() != 2 or self.factor.shape[0] != d:
            raise ValueError(
                f"factor must have shape (d, K) with d={d}, got {tuple(self.factor.shape)}"
            )

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def rank(self) -> int:
        return int(self.factor.shape[1])

    def to(self, dtype: torch.dtype) -> LowRankGaussian:
        """The same Gaussian with its tensors cast to `dtype` (e.g. float64 for exact KLs)."""
        return LowRankGaussian(self.mean.to(dtype), self.var.to(dtype), self.factor.to(dtype))

    # --- Woodbury pieces -------------------------------------------------------------------
    @cached_property
    def _scaled_factor(self) -> Tensor:
        """Λ⁻¹ D, shape (d, K)."""
        return self.factor / self.var.unsqueeze(1)

    @cached_property
    def _capacitance_cholesky(self) -> Tensor:
        """Lower Cholesky factor of C = I_K + Dᵀ Λ⁻¹ D.

        C is formed and factored in float64 (an O(d K²) product and a K×K factorisation) and
        then cast back: in float32, rounding in DᵀΛ⁻¹D can cost C its definiteness when some
        σᵢ are small and D is not.
        """
        wide = self.factor.double()
        cap = wide.T @ (wide / self.var.double().unsqueeze(1))
        cap.diagonal().add_(1.0)
        cholesky: Tensor = torch.linalg.cholesky(cap)
        return cholesky.to(self.mean.dtype)

    def cov_matvec(self, x: Tensor) -> Tensor:
        """Σ x for x of shape (d,) or (d, m)."""
        if x.dim() == 1:
            return self.var * x + self.factor @ (self.factor.T @ x)
        return self.var.unsqueeze(1) * x + self.factor @ (self.factor.T @ x)

    def precision_matvec(self, x: Tensor) -> Tensor:
        """Σ⁻¹ x for x of shape (d,) or (d, m), by Woodbury."""
        vector = x.dim() == 1
        x2 = x.unsqueeze(1) if vector else x
        lam_inv_x = x2 / self.var.unsqueeze(1)
        if self.rank:
            inner = torch.cholesky_solve(self.factor.T @ lam_inv_x, self._capacitance_cholesky)
            lam_inv_x = lam_inv_x - self._scaled_factor @ inner
        return lam_inv_x.squeeze(1) if vector else lam_inv_x

    def precision_diag(self) -> Tensor:
        """diag(Σ⁻¹), shape (d,)."""
        diag = 1.0 / self.var
        if self.rank:
            scaled = self._scaled_factor
            # Λ⁻¹ D C⁻¹ = (C⁻¹ (Λ⁻¹ D)ᵀ)ᵀ, C symmetric.
            scaled_cinv = torch.cholesky_solve(scaled.T, self._capacitance_cholesky).T
            diag = diag - (scaled_cinv * scaled).sum(dim=1)
        return diag

    def logdet_cov(self) -> Tensor:
        """log |Σ| by the matrix determinant lemma."""
        logdet = torch.log(self.var).sum()
        if self.rank:
            logdet = logdet + 2.0 * torch.log(torch.diagonal(self._capacitance_cholesky)).sum()
        return logdet

    # --- sampling and densities -------------------------------------------------------------
    def rsample_from_noise(self, z_diag: Tensor, z_factor: Tensor) -> Tensor:
        """μ + √v ⊙ z₁ + D z₂ for standard-normal z₁ (…, d) and z₂ (…, K) (reparameterised)."""
        return self.mean + self.var.sqrt() * z_diag + z_factor @ self.factor.T

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n independent draws, shape (n, d)."""
        dtype, device = self.mean.dtype, self.mean.device
        z_diag = torch.randn(n, self.dim, generator=generator, dtype=dtype, device=device)
        z_factor = torch.randn(n, self.rank, generator=generator, dtype=dtype, device=device)
        return self.rsample_from_noise(z_diag, z_factor)

    def log_prob(self, w: Tensor) -> Tensor:
        """log N(w; μ, Σ) for w of shape (d,) or (n, d)."""
        diff = (w - self.mean).T if w.dim() == 2 else (w - self.mean)
        maha = (diff * self.precision_matvec(diff)).sum(dim=0)
        log2pi = torch.log(torch.tensor(2.0 * torch.pi, dtype=self.mean.dtype))
        return -0.5 * (self.dim * log2pi + self.logdet_cov() + maha)

    def to_torch(self) -> torch.distributions.LowRankMultivariateNormal:
        """The equivalent `torch.distributions.LowRankMultivariateNormal`.

        For K = 0 a single zero column is used: torch needs rank ≥ 1, and a zero column changes
        nothing in Σ.
        """
        factor = self.factor
        if self.rank == 0:
            factor = torch.zeros(self.dim, 1, dtype=self.mean.dtype, device=self.mean.device)
        return torch.distributions.LowRankMultivariateNormal(self.mean, factor, self.var)


def kl_divergence(q: LowRankGaussian, p: LowRankGaussian) -> Tensor:
    """KL(q ‖ p) in closed form, O(d (K_q + K_p)²).

    KL = ½ [tr(Σ_p⁻¹ Σ_q) + (μ_p − μ_q)ᵀ Σ_p⁻¹ (μ_p − μ_q) − d + log|Σ_p| − log|Σ_q|].
    Compute in float64 when the KL is small: in float32 a KL of 1e-5 is lost to cancellation.
    """
    if q.dim != p.dim:
        raise ValueError(f"KL between Gaussians of different dimension: {q.dim} vs {p.dim}")
    trace = (p.precision_diag() * q.var).sum()
    if q.rank:
        trace = trace + (q.factor * p.precision_matvec(q.factor)).sum()
    diff = p.mean - q.mean
    maha = (diff * p.precision_matvec(diff)).sum()
    return 0.5 * (trace + maha - q.dim + p.logdet_cov() - q.logdet_cov())
