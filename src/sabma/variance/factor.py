"""The low-rank factor D of the tempered posterior, from a square root of its data precision.

Target: the Gaussian with precision P* = diag(a) + U Uᵀ (a = diag(Σ_p⁻¹)/T, U Uᵀ = (λ/T) · the
data curvature, U of shape (d, M), e.g. M per-example gradients with labels sampled from the
model: their mean outer product is the Fisher, which for a softmax likelihood is the GGN).
Family: Σ = Λ + D Dᵀ with Λ = diag(σ²) given (the natural-gradient diagonal).

For fixed Λ the D-stationarity of KL(q ‖ N(μ, P*⁻¹)) (the tempered objective) reads
P* D = Σ⁻¹ D. Whitening with Λ^{1/2} (D̃ = Λ^{-1/2} D, P̃ = Λ^{1/2} P* Λ^{1/2}) and Woodbury,
Σ⁻¹D = Λ^{-1/2} D̃ (I + D̃ᵀD̃)⁻¹, turn it into

    P̃ D̃ (I + D̃ᵀ D̃) = D̃,

solved by D̃ = V diag(√(1/π − 1)) for eigenpairs (V, π) of P̃ with π < 1; the objective gains
½ Σ_k (1/π_k − 1 + log π_k) from column k, so the best K columns take the K smallest π: the
directions in which the diagonal Λ under-states the posterior's variance (correlations that a
mean-field Gaussian cannot carry). When Λ is the natural-gradient diagonal, diag(P̃) = 1.

P̃⁻¹ = A⁻¹ − A⁻¹Ũ (I_M + ŨᵀA⁻¹Ũ)⁻¹ ŨᵀA⁻¹ (A = Λ ⊙ a, Ũ = Λ^{1/2} U) costs O(dM) per vector
after one M×M Cholesky factorisation (O(dM²)); its top eigenvectors (eigenvalues ν = 1/π) come
from a few rounds of subspace iteration, warm-started from the previous factor. Nothing d×d is
formed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sabma.posterior.factor_products import tall_t_times, tall_times


def whitened_inverse(prior_share: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The pieces of v ↦ P̃⁻¹ v for P̃ = diag(A) + ŨŨᵀ: (1/A, Ũ, Cholesky factor of
    I + Ũᵀ diag(1/A) Ũ)."""
    inv_a = 1.0 / prior_share
    gram = tall_t_times(u, inv_a.unsqueeze(1) * u)
    gram.diagonal().add_(1.0)
    chol = torch.linalg.cholesky(gram)
    return inv_a, u, chol


def apply_whitened_inverse(
    pieces: tuple[Tensor, Tensor, Tensor],
    v: Tensor,
    out: Tensor | None = None,
    scratch: Tensor | None = None,
) -> Tensor:
    """P̃⁻¹ v for v of shape (d, k), into ``out`` where given (not ``v``); ``scratch``, a
    column-major (d, k) tensor, holds an intermediate product (see
    :func:`~sabma.posterior.factor_products.tall_times`), and may be ``v`` itself where ``v`` is
    not needed afterwards (it is read before ``scratch`` is written)."""
    inv_a, u, chol = pieces
    av = torch.mul(inv_a.unsqueeze(1), v, out=out)
    inner = torch.cholesky_solve(tall_t_times(u, av), chol)
    return av.sub_(tall_times(u, inner, out=scratch).mul_(inv_a.unsqueeze(1)))


def _column_major(rows: int, cols: int, like: Tensor) -> Tensor:
    """An empty (rows, cols) tensor stored column-major, as LAPACK's QR and the blocked
    products want it."""
    return like.new_empty(cols, rows).T


def residual_factor(
    var: Tensor,
    prior_share: Tensor,
    data_sqrt: Tensor,
    rank: int,
    previous: Tensor | None = None,
    iterations: int = 8,
    oversample: int = 5,
    generator: torch.Generator | None = None,
) -> Tensor:
    """D (d, ``rank``) for Σ = diag(``var``) + D Dᵀ closest to the target (module docstring).

    Args:
        var: Λ, the diagonal σ² (d,).
        prior_share: A = Λ ⊙ diag(Σ_p⁻¹)/T, the prior's part of the whitened precision's
            diagonal (d,), in (0, 1] when Λ is the natural-gradient diagonal.
        data_sqrt: Ũ = Λ^{1/2} U, shape (d, M): the whitened square root of the data precision.
        rank: K.
        previous: the factor to warm-start the subspace iteration from (d, ≤ K).
        iterations: rounds of subspace iteration.
        oversample: extra columns carried through the iteration (better top-K directions).

    Columns come out in order of the variance they add (largest first); a direction whose
    whitened precision π is not below 1 gets a zero column.
    """
    d = var.numel()
    if rank == 0:
        return var.new_zeros(d, 0)
    work = torch.float64 if var.dtype == torch.float64 else torch.float32
    var_w, share_w, u_w = var.to(work), prior_share.to(work), data_sqrt.to(work)
    if u_w.shape[1] > d:  # more gradients than parameters: the same U Uᵀ from d columns
        u_w = torch.linalg.qr(u_w.T, mode="r").R.T
    pieces = whitened_inverse(share_w, u_w)
    width = min(d, rank + oversample)
    start = torch.randn(d, width, generator=generator, dtype=work, device=var.device)
    if previous is not None and previous.shape[1]:
        k = min(previous.shape[1], width)
        start[:, :k] = previous[:, :k].to(work) / var_w.sqrt().unsqueeze(1)
    # Two (d, width) buffers serve every round: no round allocates a d-sized tensor (at
    # d = 1.9·10⁶ each new one costs ~30 ms of page faults). The basis, read first, holds the
    # round's intermediate product until the QR writes the next basis over it.
    basis, product = _column_major(d, width, start), _column_major(d, width, start)
    triangle = start.new_empty(width, width)
    torch.linalg.qr(start, out=(basis, triangle))
    for _ in range(iterations):
        apply_whitened_inverse(pieces, basis, out=product, scratch=basis)
        torch.linalg.qr(product, out=(basis, triangle))
    projected = basis.T @ apply_whitened_inverse(pieces, basis, out=product)
    nu, vectors = torch.linalg.eigh(0.5 * (projected + projected.T))
    nu, vectors = nu.flip(0)[:rank], vectors.flip(1)[:, :rank]
    whitened = (basis @ vectors) * (nu - 1.0).clamp_min(0.0).sqrt()
    factor = var_w.sqrt().unsqueeze(1) * whitened
    if factor.shape[1] < rank:
        factor = torch.cat([factor, factor.new_zeros(d, rank - factor.shape[1])], dim=1)
    return canonical_signs(factor, previous).to(var.dtype)


def canonical_signs(factor: Tensor, previous: Tensor | None = None) -> Tensor:
    """``factor`` with each column's sign fixed: pointing the way of the same column of
    ``previous`` where that one is not zero, else with its largest-magnitude entry positive.

    An eigenvector's sign is arbitrary (``eigh`` returns either, and float rounding — another
    summation order, another number of processes — can flip it). DDᵀ does not see the sign, but a
    sample w = μ + σ⊙z₁ + D z₂ does: with the step's z₂ kept, a flipped column moves the sample
    and hence the whole training trajectory. Fixing the sign makes the factor a function of the
    subspace and its eigenvalues alone (up to rotations within a degenerate eigenvalue), and
    keeps a column's meaning from one refresh to the next."""
    if factor.shape[1] == 0:
        return factor
    reference = factor.gather(0, factor.abs().argmax(dim=0, keepdim=True)).squeeze(0)
    if previous is not None and previous.shape == factor.shape:
        along = (factor * previous.to(factor)).sum(dim=0)
        reference = torch.where(along != 0, along, reference)
    return factor * torch.where(reference < 0, -1.0, 1.0).to(factor)
