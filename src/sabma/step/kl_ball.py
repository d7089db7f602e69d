"""The perturbation of the SA-BMA step: the ascent direction inside a KL ball between posteriors.

Linearising L_data and taking KL(q_{θ+ε} ‖ q_θ) ≈ ½ εᵀ F ε gives ε* = ρ F⁻¹ g / √(gᵀ F⁻¹ g), one
global norm over all perturbed blocks (method.md §4). Where the second-order ball is not trusted
(the factor is perturbed, or a log σ would move too far) the exact KL sets the step's length.
"""

from __future__ import annotations

import math
from enum import StrEnum

import torch
from torch import Tensor

from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian
from sabma.step.fisher import block_dots, exact_kl_step, natural_direction

LinAlgError: type[RuntimeError] = torch.linalg.LinAlgError  # type: ignore[attr-defined]

#: The largest move of one log σ for which the second-order KL ball is trusted when K > 0: the
#: diagonal log-std Fisher 2(σᵢ²Pᵢᵢ)² drops the s/D cross terms, and where D carries most of a
#: coordinate's variance it is tiny, so F⁻¹g can move that σ by e^{10} (measured on the 64 px
#: default: ‖ε_s‖ = 11.6 at one step and training diverged). Beyond it the exact KL sets the length.
SECOND_ORDER_LOG_STD = 0.5


class Metric(StrEnum):
    """How the perturbation ball is measured."""

    FISHER = "fisher"
    """KL ball between posteriors: ½ εᵀ F(θ) ε ≤ ρ²/2, F the Fisher information of q_θ."""
    EUCLIDEAN = "euclidean"
    """Euclidean ball ‖ε‖ ≤ ρ in θ (F = I); with σ → 0 and mean-only perturbation this is SAM."""


@torch.no_grad()
def ball_perturbation(
    posterior: GaussianPosterior,
    grads: dict[str, Tensor],
    rho: float,
    metric: Metric,
    damping: float,
    q: LowRankGaussian | None = None,
) -> dict[str, Tensor]:
    """ε* per block for the block gradients ``grads`` (empty when the gradient is zero or
    ρ = 0): the steepest ascent of the linearised loss on the ball of radius ``rho``. ``q``:
    the posterior's :func:`detached_gaussian` where the caller keeps it (its Woodbury pieces are
    computed once per Gaussian)."""
    if metric is Metric.EUCLIDEAN:
        direction, q = dict(grads), None
    else:
        q = detached_gaussian(posterior) if q is None else q
        try:
            direction = natural_direction(q, grads, damping)
        except LinAlgError as err:  # Σ's capacitance is not definite
            raise FloatingPointError(
                "SABMA: the posterior's covariance is not finite or not positive definite "
                f"({str(err).splitlines()[0]}); training has diverged (lower the learning rate)"
            ) from None
    dots = block_dots(grads, direction)
    sq_norm = float(torch.stack(list(dots.values())).sum())
    if not sq_norm > 0 or rho == 0:
        return {}
    t = rho / math.sqrt(sq_norm)
    if q is not None and (
        "factor" in direction
        or (
            q.rank
            and "log_std" in direction
            and t * largest_magnitude(direction["log_std"]) > SECOND_ORDER_LOG_STD
        )
    ):
        # v_μ = Σ g: its term of the KL, v_μᵀ Σ⁻¹ v_μ = gᵀ Σ g, needs no solve
        quad = float(dots["mean"]) if "mean" in dots else None
        t = exact_kl_step(q, posterior.log_std.detach(), direction, rho**2 / 2, t, mean_quad=quad)
    if q is None:  # the Euclidean direction is the gradient itself
        return {b: t * v for b, v in direction.items()}
    return {b: v.mul_(t) for b, v in direction.items()}  # F⁻¹g: this call's own tensors


def largest_magnitude(x: Tensor) -> float:
    """max |xᵢ|, from one pass without a temporary (``aminmax``; an ∞-norm is 20× slower on
    the CPU)."""
    low, high = torch.aminmax(x)
    return max(-float(low), float(high))


def detached_gaussian(posterior: GaussianPosterior) -> LowRankGaussian:
    """q_θ without autograd history (its mean and factor are views of θ)."""
    with torch.no_grad():
        return LowRankGaussian(
            posterior.mean.detach(), torch.exp(2.0 * posterior.log_std), posterior.factor.detach()
        )
