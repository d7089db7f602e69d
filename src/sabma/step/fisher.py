"""The Fisher geometry of a diagonal + low-rank Gaussian, and the SA-BMA perturbation.

For q_θ = N(μ, Σ), Σ = diag(σ²) + D Dᵀ, σ = exp(s), P = Σ⁻¹, the Fisher information of q_θ with
respect to θ = (μ, s, D) has (method.md §4):

* mean block, exact:              F_μμ = P                                  → F⁻¹ g = Σ g
* log-std block, diagonal:        F_{sᵢsᵢ} = 2 (σᵢ² Pᵢᵢ)²                   (= 2 when K = 0)
* factor block, diagonal:         F_{D_jk D_jk} = P_jj (d_kᵀ P d_k) + ((P d_k)_j)²
* mean/covariance cross blocks are 0; s/D cross terms are dropped (block-diagonal preconditioner).

The factor block vanishes at D = 0 (Σ is quadratic in D), so it is damped. We damp it relative to
the precision, F_DD + δ · P_jj, which keeps the damping in the units of the block (1/w²) and makes
δ scale-free; δ = 1 by default. Because the second-order ball is degenerate in D at D = 0, a
perturbation that includes the factor takes its length from the exact KL (:func:`exact_kl_step`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from sabma.posterior.lowrank import LowRankGaussian, kl_divergence

BLOCKS = ("mean", "log_std", "factor")


def natural_direction(
    q: LowRankGaussian, grads: Mapping[str, Tensor], damping: float = 1.0
) -> dict[str, Tensor]:
    """F⁻¹ g for each block present in ``grads`` (keys among :data:`BLOCKS`), O(d K²)."""
    direction: dict[str, Tensor] = {}
    if "mean" in grads:
        direction["mean"] = q.cov_matvec(grads["mean"]) if q.rank else q.var * grads["mean"]
    if "log_std" in grads:
        if q.rank:  # F_ss = 2 (σ² P_ii)²
            scaled = q.var * q.precision_diag()
            direction["log_std"] = grads["log_std"] / (2.0 * scaled.square_())
        else:  # σ² P_ii = 1: F_ss = 2
            direction["log_std"] = 0.5 * grads["log_std"]
    if "factor" in grads and q.rank:
        p_diag = q.precision_diag()
        p_factor = q.precision_matvec(q.factor)  # columns P d_k, (d, K)
        quad = (q.factor * p_factor).sum(dim=0)  # d_kᵀ P d_k, (K,)
        fisher_d = p_diag.unsqueeze(1) * (quad.unsqueeze(0) + damping) + p_factor**2
        direction["factor"] = grads["factor"] / fisher_d
    return direction


def dot(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Tensor:
    """Σ_blocks ⟨a_b, b_b⟩ over the blocks of ``a``."""
    return torch.stack([torch.vdot(a[k].reshape(-1), b[k].reshape(-1)) for k in a]).sum()


def shifted(
    q: LowRankGaussian, log_std: Tensor, step: Mapping[str, Tensor], t: float
) -> LowRankGaussian:
    """q_{θ + t·step}: the Gaussian with (μ, s, D) moved by ``t * step`` (missing blocks stay)."""
    mean = q.mean + t * step["mean"] if "mean" in step else q.mean
    new_log_std = log_std + t * step["log_std"] if "log_std" in step else log_std
    factor = q.factor + t * step["factor"] if "factor" in step else q.factor
    return LowRankGaussian(mean, torch.exp(2.0 * new_log_std), factor)


def exact_kl_step(
    q: LowRankGaussian,
    log_std: Tensor,
    direction: Mapping[str, Tensor],
    target: float,
    t_guess: float,
    rtol: float = 1e-4,
    max_iter: int = 200,
) -> float:
    """The step length t > 0 with KL(q_{θ+t·v} ‖ q_θ) = target, by bracketing and bisection.

    Computed in float64 (in float32 a KL of 1e-5 is lost to cancellation). Each evaluation costs
    O(d K²); the Cholesky factor of q_θ's capacitance is computed once.
    """
    q64 = q.to(torch.float64)
    s64 = log_std.double()
    v64 = {k: v.double() for k, v in direction.items()}

    def kl_at(t: float) -> float:  # a step so long that the KL overflows counts as too long
        try:
            kl = float(kl_divergence(shifted(q64, s64, v64, t), q64))
        except RuntimeError:  # torch.linalg.LinAlgError: the capacitance lost definiteness
            return math.inf
        return kl if math.isfinite(kl) else math.inf

    lo, hi = 0.0, t_guess
    for _ in range(max_iter):  # grow the bracket until it holds the root
        if kl_at(hi) >= target:
            break
        lo, hi = hi, 2.0 * hi
    else:
        return hi
    for _ in range(max_iter):
        mid = 0.5 * (lo + hi)
        kl = kl_at(mid)
        if abs(kl / target - 1.0) < rtol:
            return mid
        lo, hi = (mid, hi) if kl < target else (lo, mid)
    return 0.5 * (lo + hi)
