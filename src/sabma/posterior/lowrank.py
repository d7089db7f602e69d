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

from sabma.posterior.factor_products import add_factor_times_, factor_t_times
from sabma.posterior.indices import indices_above

#: The leverage above which a coordinate counts as one where D carries the variance
#: (:meth:`LowRankGaussian.high_leverage_rows`).
HIGH_LEVERAGE = 1e-3
#: Column chunk of the (K, d) temporaries on a CPU (K·c floats stay in a core's cache).
_CPU_CHUNK = 1 << 15


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

    @cached_property
    def double(self) -> LowRankGaussian:
        """This Gaussian in float64, made once (and its Woodbury pieces with it)."""
        return self if self.mean.dtype == torch.float64 else self.to(torch.float64)

    def capacitance_cholesky(self) -> Tensor:
        """The lower Cholesky factor of C = I_K + Dᵀ Λ⁻¹ D (computed once per Gaussian)."""
        return self._capacitance_cholesky

    def to(self, dtype: torch.dtype) -> LowRankGaussian:
        """The same Gaussian with its tensors cast to `dtype` (e.g. float64 for exact KLs)."""
        return LowRankGaussian(self.mean.to(dtype), self.var.to(dtype), self.factor.to(dtype))

    # --- Woodbury pieces -------------------------------------------------------------------
    # Products with D are written with Dᵀ on the left (Dᵀ x, zᵀ Dᵀ): for a factor stored
    # column-major, as GaussianPosterior stores it, they run along contiguous rows of length d.
    # On a CPU, terms that need a (K, d) temporary are computed in column chunks that stay in
    # cache: at d = 2·10⁶ a full (K, d) temporary costs more memory traffic than the network's
    # pass. On a GPU one chunk (fewer kernel launches) is faster.
    def _chunk(self) -> int:
        return _CPU_CHUNK if self.factor.device.type == "cpu" else max(self.dim, 1)

    def _factor_t_chunks(self) -> list[tuple[Tensor, Tensor]]:
        """(Dᵀ, v) in column chunks: pairs of shape (K, c) and (c,)."""
        chunk = self._chunk()
        return list(zip(self.factor.T.split(chunk, dim=1), self.var.split(chunk), strict=True))

    @cached_property
    def _capacitance_cholesky(self) -> Tensor:
        """Lower Cholesky factor of C = I_K + Dᵀ Λ⁻¹ D.

        C is formed in the working dtype and factored with a definiteness check; where rounding
        in Dᵀ Λ⁻¹ D cost C its definiteness (some σᵢ tiny and D not), C is formed and factored
        again in float64, then cast back.
        """
        cap = sum(f @ (f / v).T for f, v in self._factor_t_chunks())
        assert isinstance(cap, Tensor)
        cap = cap + torch.eye(self.rank, dtype=cap.dtype, device=cap.device)
        cholesky, info = torch.linalg.cholesky_ex(cap)
        if int(info) == 0 and bool(torch.isfinite(cholesky).all()):
            return cholesky
        wide = self.factor.T.double()
        cap = wide @ (wide / self.var.double()).T
        cap.diagonal().add_(1.0)
        cholesky = torch.linalg.cholesky(cap)
        return cholesky.to(self.mean.dtype)

    def weighted_grams(self, weights: Tensor) -> Tensor:
        """Dᵀ diag(w_j) D for each row w_j of ``weights`` (m, d): shape (m, K, K), in column
        chunks of D (one pass over D for all m)."""
        chunk = self._chunk()
        m, k = weights.shape[0], self.rank
        grams = weights.new_zeros(m, k, k)
        for f, w in zip(
            self.factor.T.split(chunk, dim=1), weights.split(chunk, dim=1), strict=True
        ):  # (m·K, c) @ (c, K): all m grams in one product per chunk
            grams += ((w.unsqueeze(1) * f).reshape(m * k, -1) @ f.T).view(m, k, k)
        return grams

    def cov_matvec(self, x: Tensor) -> Tensor:
        """Σ x for x of shape (d,) or (d, m)."""
        if x.dim() == 1:
            inner = factor_t_times(self.factor, x)
            return add_factor_times_(torch.mul(self.var, x), self.factor, inner)
        return self.var.unsqueeze(1) * x + self.factor @ (self.factor.T @ x)

    def precision_matvec(self, x: Tensor) -> Tensor:
        """Σ⁻¹ x = Λ⁻¹ (x − D C⁻¹ Dᵀ Λ⁻¹ x) for x of shape (d,) or (d, m), by Woodbury."""
        vector = x.dim() == 1
        x2 = x.unsqueeze(1) if vector else x
        var = self.var.unsqueeze(1)
        if not self.rank:
            out = x2 / var
        else:
            inner = torch.cholesky_solve(self.factor.T @ (x2 / var), self._capacitance_cholesky)
            out = (x2 - self.factor @ inner) / var
        return out.squeeze(1) if vector else out

    def precision_diag(self) -> Tensor:
        """diag(Σ⁻¹), shape (d,): 1/vᵢ − ‖L⁻¹ Dᵢ‖² / vᵢ², Dᵢ the i-th row of D, C = L Lᵀ
        (computed once per Gaussian, like the capacitance)."""
        return self._precision_diagonal

    def variance_share(self) -> Tensor:
        """sᵢ = σᵢ²·(Σ⁻¹)ᵢᵢ = 1 − dᵢᵀC⁻¹dᵢ/σᵢ², the share of coordinate i's variance that is not
        D's (1 for K = 0), shape (d,); computed once per Gaussian."""
        return self._variance_share

    @cached_property
    def _variance_share(self) -> Tensor:
        return self.var * self.precision_diag()

    def high_leverage_rows(self) -> Tensor:
        """The coordinates where D holds more than :data:`HIGH_LEVERAGE` of the variance
        (ℓᵢ > 10⁻³; at most K·10³ of them, since Σℓ ≤ K), as indices; computed once per
        Gaussian."""
        return self._high_leverage_rows

    @cached_property
    def _high_leverage_rows(self) -> Tensor:
        return indices_above(self.leverage(), HIGH_LEVERAGE)

    def log_std_fisher(self) -> Tensor:
        """2sᵢ², the diagonal of the Fisher information of q with respect to log σ (2 for
        K = 0; see :mod:`sabma.step.fisher`), shape (d,); computed once per Gaussian."""
        return self._log_std_fisher

    @cached_property
    def _log_std_fisher(self) -> Tensor:
        return 2.0 * self.variance_share().square()

    def leverage(self) -> Tensor:
        """ℓᵢ = dᵢᵀC⁻¹dᵢ/σᵢ² = 1 − sᵢ, D's share of coordinate i's variance in the Woodbury
        sense (Σᵢ ℓᵢ ≤ K); computed once per Gaussian."""
        return self._leverage

    @cached_property
    def _leverage(self) -> Tensor:
        return 1.0 - self.variance_share()

    @cached_property
    def _precision_diagonal(self) -> Tensor:
        if not self.rank:
            return 1.0 / self.var
        eye = torch.eye(self.rank, dtype=self.mean.dtype, device=self.mean.device)
        chol_inv = torch.linalg.solve_triangular(self._capacitance_cholesky, eye, upper=False)
        pieces = []
        for f, v in self._factor_t_chunks():
            inv_v = 1.0 / v
            solved = chol_inv @ f
            pieces.append(inv_v - solved.square().sum(dim=0) * inv_v.square())
        return torch.cat(pieces)

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
        # drawn on the generator's device (a seeded CPU generator gives the same draws whatever
        # device the posterior is on), then moved
        dtype, device = self.mean.dtype, self.mean.device
        source = generator.device if generator is not None else device
        z_diag = torch.randn(n, self.dim, generator=generator, dtype=dtype, device=source)
        z_factor = torch.randn(n, self.rank, generator=generator, dtype=dtype, device=source)
        return self.rsample_from_noise(z_diag.to(device), z_factor.to(device))

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
