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
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from sabma.posterior.indices import indices_above, union
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
            direction["log_std"] = grads["log_std"] / q.log_std_fisher()
        else:  # σ² P_ii = 1: F_ss = 2
            direction["log_std"] = 0.5 * grads["log_std"]
    if "factor" in grads and q.rank:
        p_diag = q.precision_diag()
        p_factor = q.precision_matvec(q.factor)  # columns P d_k, (d, K)
        quad = (q.factor * p_factor).sum(dim=0)  # d_kᵀ P d_k, (K,)
        fisher_d = p_diag.unsqueeze(1) * (quad.unsqueeze(0) + damping) + p_factor**2
        direction["factor"] = grads["factor"] / fisher_d
    return direction


def block_dots(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """⟨a_b, b_b⟩ for each block of ``a``; their sum is ``torch.stack(list(...)).sum()``."""
    return {k: torch.vdot(a[k].reshape(-1), b[k].reshape(-1)) for k in a}


def shifted(
    q: LowRankGaussian, log_std: Tensor, step: Mapping[str, Tensor], t: float
) -> LowRankGaussian:
    """q_{θ + t·step}: the Gaussian with (μ, s, D) moved by ``t * step`` (missing blocks stay)."""
    mean = q.mean + t * step["mean"] if "mean" in step else q.mean
    new_log_std = log_std + t * step["log_std"] if "log_std" in step else log_std
    factor = q.factor + t * step["factor"] if "factor" in step else q.factor
    return LowRankGaussian(mean, torch.exp(2.0 * new_log_std), factor)


#: A coordinate with |2t·v_sᵢ| ≤ SERIES_LIMIT at every t the root search may try enters the KL
#: along a direction through moments, sums over d computed once (a Taylor series in t); the
#: others exactly at each t (:func:`shift_kl`).
SERIES_LIMIT = 0.01
#: The exact-KL length of a μ/log σ direction may take the KL to within this fraction of the
#: target where that skips the pass over D (:func:`shift_kl`'s ``atol``); the root itself is
#: found to 10⁻⁴ of it, so the step is on the ball to 6·10⁻⁴.
SHORTCUT_RTOL = 5e-4


def shift_kl(
    q: LowRankGaussian,
    direction: Mapping[str, Tensor],
    mean_quad: float | None = None,
    atol: float = 0.0,
) -> Callable[[float], float]:
    """t ↦ KL(q_{θ+t·v} ‖ q_θ) for a direction v of μ and log σ (D fixed), in float64, to within
    ``atol`` (0: to rounding and the series' remainder, ~10⁻⁹ of the KL).

    With xᵢ = 2t·v_sᵢ (Λ' = Λ·eˣ), sᵢ = Pᵢᵢλᵢ, C = I + DᵀΛ⁻¹D = LLᵀ, Δ = Dᵀ(Λ'⁻¹ − Λ⁻¹)D,
    X = L⁻¹ΔL⁻ᵀ (so |C'|/|C| = |I + X|) and m = v_μᵀΣ⁻¹v_μ:

        2·KL = Σᵢ [sᵢ(eˣⁱ − 1) − xᵢ] + t²·m − log|I + X|.

    Most coordinates move little (|xᵢ| ≤ :data:`SERIES_LIMIT` at every t tried; on the MLP all
    but 1–2 thousand of 1.9 M): their terms are power series in t whose coefficients are sums
    over d, computed once. Their first-order terms cancel coordinate by coordinate (sᵢ = 1 − ℓᵢ,
    ℓᵢ = dᵢᵀC⁻¹dᵢ/λᵢ, and tr X_S = Σ ℓᵢ(e⁻ˣⁱ − 1)), so they enter as

        Σ_S [eˣ − 1 − x − 2ℓ(cosh x − 1)] + (tr X_S − log|I + X|),

    second order, with nothing large cancelling. The other coordinates, and every one where D
    holds more than 10⁻³ of the variance (:meth:`LowRankGaussian.high_leverage_rows`), enter
    exactly at each t (X_L). The small coordinates' share X_S of X is small:
    ‖X_S‖_* ≤ β = Σ_S |e⁻ˣ − 1|·ℓ, a sum over leverages below 10⁻³. Where dropping it from
    log|I + X| − tr X_S moves the KL by at most ``atol`` (the bound c·β + β'²/(2(1 − β')),
    c = ‖(I + X_L)⁻¹X_L‖, β' = ‖(I + X_L)⁻¹‖·β), it is dropped and no evaluation reads D;
    otherwise X_S comes from Dᵀ diag(vⁿ/λ) D, n ≤ 3, in one pass over D. ``m``:
    ``mean_quad`` where the caller has it (v_μ = Σ g gives m = gᵀΣg)."""
    q64 = q.double
    # x = t·a, a = 2v_s: the moments are taken from v_s and scaled by powers of 2 (exact); they
    # are in q's own dtype, the few exact rows in float64
    v_s = direction["log_std"] if "log_std" in direction else torch.zeros_like(q.var)
    m = 0.0 if mean_quad is None else mean_quad
    if "mean" in direction and mean_quad is None:
        v_m = direction["mean"].double()
        m = float(torch.dot(v_m, q64.precision_matvec(v_m)))
    cholesky = q64.capacitance_cholesky() if q.rank else None
    kept: dict[str, Any] = {}

    def expand(t_max: float) -> None:
        """The moments for every t ≤ t_max, and the rows of the coordinates beyond them."""
        magnitude = v_s.abs()
        # where D carries a share of the variance, a coordinate enters exactly however little
        # it moves: the bound on the dropped share X_S then sums over small leverages only
        rows = union(indices_above(magnitude, SERIES_LIMIT / (2.0 * t_max)), q.high_leverage_rows())
        leverage = q.leverage()
        # β/t ≤ e^τ Σ_S |aᵢ|ℓᵢ, since |e⁻ˣ − 1| ≤ |x|e^τ where |x| ≤ τ (a masked_fill of the
        # rows is 10× slower than an index_fill)
        magnitude.index_fill_(0, rows, 0.0)
        spread = 2.0 * math.exp(SERIES_LIMIT) * float(torch.dot(magnitude, leverage))
        # sums over d of powers of the small aᵢ = 2vᵢ, plain and ℓ-weighted: dot products and
        # cascade sums in q's dtype (relative error ~10⁻⁷), in two d-vectors
        small = v_s.clone().index_fill_(0, rows, 0.0)
        square = torch.mul(small, small, out=magnitude)
        s2, l2 = 4.0 * float(square.sum()), 4.0 * float(torch.dot(square, leverage))
        s3, s4 = 8.0 * float(torch.dot(square, small)), 16.0 * float(torch.dot(square, square))
        s5 = 32.0 * float(torch.dot(small.mul_(square), square))
        l4 = 16.0 * float(torch.dot(torch.mul(square, leverage, out=small), square))
        # of t²…t⁵ (weights 1 − 2ℓ on the even powers): the remainder is ≤ 2τ⁴/6!·x²
        # (3·10⁻¹¹·x² at τ = 0.01)
        coefficients = [(s2 - 2.0 * l2) / 2.0, s3 / 6.0, (s4 - 2.0 * l4) / 24.0, s5 / 120.0]
        kept.update(
            t_max=t_max,
            small_rows=rows,
            coefficients=coefficients,
            spread=spread,
            grams=None,
            rows=(
                2.0 * v_s[rows].double(),
                q64.variance_share()[rows],
                q64.var[rows],
                q64.factor[rows],
            ),
        )

    def small_share(t: float) -> Tensor:
        """X_S at t, from Dᵀ diag(vⁿ/λ) D (n ≤ 3, one pass over D, kept for the search):
        Λ'⁻¹ − Λ⁻¹ = Λ⁻¹(e⁻ˣ − 1) to x³, relative remainder ≤ τ³/24 (4·10⁻⁸)."""
        if kept["grams"] is None:  # rows −x/λ, x²/(2λ), −x³/(6λ) at t = 1 (x = 2v), in place
            small = v_s.clone().index_fill_(0, kept["small_rows"], 0.0)
            weights = small.new_empty(3, len(small))
            torch.div(small, q.var, out=weights[0]).mul_(2.0)
            torch.mul(weights[0], small, out=weights[1])
            torch.mul(weights[1], small, out=weights[2]).mul_(2.0).div_(3.0)
            weights[0::2].neg_()
            kept["grams"] = q.weighted_grams(weights).double()
        return whitened(sum(t**n * g for n, g in enumerate(kept["grams"], start=1)))

    def whitened(delta: Tensor) -> Tensor:
        assert cholesky is not None
        inner = torch.linalg.solve_triangular(cholesky, delta, upper=False)
        return torch.linalg.solve_triangular(cholesky, inner.T, upper=False)

    def log_det(t: float, x: Tensor) -> float:
        """log|I + X| − tr X_S (inf where C' is not positive definite)."""
        _, _, var_l, factor_l = kept["rows"]
        x_large = whitened(factor_l.T @ (factor_l * (torch.expm1(-x) / var_l).unsqueeze(1)))
        x_large = 0.5 * (x_large + x_large.T)
        if atol > 0 and "log_std" in direction:
            eig = torch.linalg.eigvalsh(x_large)
            if bool(torch.isfinite(eig).all()) and float(eig.min()) > -1.0:
                beta = t * kept["spread"]
                beta_inv = beta / (1.0 + float(eig.min()))  # ‖(I + X_L)⁻¹‖·β
                c = float((eig / (1.0 + eig)).abs().max()) if len(eig) else 0.0
                if beta_inv < 0.5 and 0.5 * (c * beta + beta_inv**2 / (1 - beta_inv)) <= atol:
                    return float(torch.log1p(eig).sum())
        x_small = small_share(t) if "log_std" in direction else torch.zeros_like(x_large)
        eig = torch.linalg.eigvalsh(0.5 * (x_small + x_small.T) + x_large)
        if not bool(torch.isfinite(eig).all()) or float(eig.min()) <= -1.0:
            return -math.inf  # C' lost definiteness, or the step overflowed
        return float(torch.log1p(eig).sum()) - float(x_small.trace())

    def kl(t: float) -> float:
        if not kept or t > kept["t_max"]:
            expand(2.0 * t if t > 0 else 1.0)  # the root is seldom beyond twice the first t
        series = sum(c * t**n for n, c in enumerate(kept["coefficients"], start=2))
        a_l, scaled_l, _, _ = kept["rows"]
        x = a_l * t
        exact = float((scaled_l * torch.expm1(x) - x).sum())
        logdet = log_det(t, x) if cholesky is not None else 0.0
        value = 0.5 * (series + exact + t * t * m - logdet)
        return value if math.isfinite(value) else math.inf

    return kl


def exact_kl_step(
    q: LowRankGaussian,
    log_std: Tensor,
    direction: Mapping[str, Tensor],
    target: float,
    t_guess: float,
    rtol: float = 1e-4,
    max_iter: int = 200,
    mean_quad: float | None = None,
) -> float:
    """The step length t > 0 with KL(q_{θ+t·v} ‖ q_θ) = target (:func:`kl_root`).

    Computed in float64 (in float32 a KL of 1e-5 is lost to cancellation). A direction of μ and
    log σ alone uses :func:`shift_kl` (one pass over D for its moments, then O(K³) per
    evaluation; ``mean_quad``: v_μᵀΣ⁻¹v_μ where the caller has it); one that moves D the general
    closed form (O(d K²) per evaluation, the Cholesky factor of q_θ's capacitance computed once).
    """
    if "factor" not in direction:
        along = shift_kl(q, direction, mean_quad, atol=SHORTCUT_RTOL * target)
        return kl_root(along, target, t_guess, rtol, max_iter)
    q64 = q.double
    s64 = log_std.double()
    v64 = {k: v.double() for k, v in direction.items()}

    def kl_at(t: float) -> float:  # a step so long that the KL overflows counts as too long
        try:
            kl = float(kl_divergence(shifted(q64, s64, v64, t), q64))
        except RuntimeError:  # torch.linalg.LinAlgError: the capacitance lost definiteness
            return math.inf
        return kl if math.isfinite(kl) else math.inf

    return kl_root(kl_at, target, t_guess, rtol, max_iter)


def kl_root(
    kl_at: Callable[[float], float], target: float, t_guess: float, rtol: float, max_iter: int
) -> float:
    """The t > 0 with kl_at(t) = target (kl_at increasing from kl_at(0) = 0): a bracket grown
    from ``t_guess``, then secant steps in (log t, log KL) — where a KL that grows like t² is a
    straight line — kept inside the bracket (a bisection of log t where the secant leaves it,
    and every third step), until |KL/target − 1| < ``rtol``."""
    lo, hi = 0.0, t_guess
    kl_lo, kl_hi = 0.0, kl_at(hi)
    for _ in range(max_iter):  # grow the bracket until it holds the root
        if kl_hi >= target:
            break
        lo, kl_lo = hi, kl_hi
        # KL ∝ t² near 0: jump most of the way at once (at least doubling)
        hi *= max(2.0, 1.5 * math.sqrt(target / kl_hi)) if kl_hi > 0 else 2.0
        kl_hi = kl_at(hi)
    else:
        return hi
    if abs(kl_hi / target - 1.0) < rtol:
        return hi
    log_target = math.log(target)
    # the last two finite, positive evaluations: the secant runs through them
    points = [(t, k) for t, k in ((lo, kl_lo), (hi, kl_hi)) if t > 0 and 0 < k < math.inf]
    for i in range(max_iter):
        mid = math.sqrt(lo * hi) if lo > 0 else 0.5 * hi  # bisection of log t
        if i % 3 != 2 and points:  # every third step bisects
            t1, k1 = points[-1]
            slope = 2.0  # one point: KL ∝ t² near 0
            if len(points) > 1:
                t0, k0 = points[-2]
                slope = 0.0  # two evaluations at one t, or one KL at two: bisect
                if t0 != t1 and k0 != k1:
                    slope = (math.log(k1) - math.log(k0)) / (math.log(t1) - math.log(t0))
            if slope > 0:
                guess = math.exp(math.log(t1) + (log_target - math.log(k1)) / slope)
                if lo < guess < hi:
                    mid = guess
        kl = kl_at(mid)
        if abs(kl / target - 1.0) < rtol:
            return mid
        if 0 < kl < math.inf:
            points = [*points[-1:], (mid, kl)]
        if kl < target:
            lo, kl_lo = mid, kl
        else:
            hi, kl_hi = mid, kl
        if hi - lo <= 1e-12 * hi:  # the KL jumps across the target between adjacent t
            return 0.5 * (lo + hi)
    return 0.5 * (lo + hi)
