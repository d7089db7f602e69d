"""The SA-BMA optimiser: sharpness-aware training of a Gaussian posterior.

    min_θ  max_{ε : KL(q_{θ+ε} ‖ q_θ) ≤ ρ²/2}  L_data(θ + ε)

Linearising L_data and taking KL ≈ ½ εᵀ F ε gives ε* = ρ F⁻¹ g / √(gᵀ F⁻¹ g), one global norm over
all perturbed blocks (method.md §4). A step:

1. the caller runs a forward/backward pass through the posterior (noise z kept by the posterior);
2. :meth:`SABMA.first_step` moves θ to θ + ε* and tells the posterior not to update running
   statistics;
3. the caller runs the same forward/backward again (the same z);
4. :meth:`SABMA.second_step` restores θ, adds the gradient of the weighted KL to the prior (taken
   at θ), steps the base optimiser with the gradient from θ + ε*, and draws the next step's noise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

import torch
from torch import Tensor, nn

from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian
from sabma.step.fisher import BLOCKS, dot, exact_kl_step, natural_direction
from sabma.step.two_step import TwoStepOptimizer

LinAlgError: type[RuntimeError] = torch.linalg.LinAlgError  # type: ignore[attr-defined]


class Metric(StrEnum):
    """How the perturbation ball is measured."""

    FISHER = "fisher"
    """KL ball between posteriors: ½ εᵀ F(θ) ε ≤ ρ²/2, F the Fisher information of q_θ."""
    EUCLIDEAN = "euclidean"
    """Euclidean ball ‖ε‖ ≤ ρ in θ (F = I); with σ → 0 and mean-only perturbation this is SAM."""


class SABMA(TwoStepOptimizer):
    """Sharpness-aware Bayesian model averaging.

    Args:
        posterior: the :class:`~sabma.GaussianPosterior` to train.
        base_optimizer: the optimiser class for the update (SGD, Adam, …).
        rho: radius ρ of the ball (KL ≤ ρ²/2 for the Fisher metric, ‖ε‖ ≤ ρ for Euclidean).
        metric: ``"fisher"`` (default) or ``"euclidean"``.
        perturb: which blocks of θ the ascent step moves, among ``"mean"``, ``"log_std"``,
            ``"factor"``. The default ``("mean", "log_std")`` is where the second-order ball is
            accurate; with ``"factor"`` the step length is set by the exact KL.
        damping: δ of the factor block's Fisher, F_DD + δ·diag(Σ⁻¹) (see :mod:`sabma.step.fisher`).
        prior: a prior Gaussian p; with ``kl_weight`` > 0 the gradient of ``kl_weight · KL(q‖p)``,
            taken at the unperturbed θ, is added before the update (β/N for a tempered ELBO).
        kl_weight: the weight of the KL term.
        decay_covariance: apply the base optimiser's ``weight_decay`` to log σ and D too. Off by
            default: decaying them pulls the variances toward 1.
        block_lr_scale: learning-rate multipliers per block, e.g. ``{"factor": 0.1}``. The
            reparameterisation gradient of D, ∇_w L · z₂ᵀ, is as large as the mean's while its
            expectation is a second-order term, so D random-walks at the mean's learning rate;
            the gradient of log σ is O(σ²) and may want a larger one. Schedulers keep the ratios.
        resample: draw fresh posterior noise after each update, for the next step.
        perturb_every: k > 1 forms ε from a fresh gradient every k-th :meth:`step` only and
            reuses it in between (one pass instead of two; see :mod:`sabma.step.two_step`).
        **base_kwargs: passed to ``base_optimizer`` (``lr``, ``momentum``, ``weight_decay``, …).
    """

    def __init__(
        self,
        posterior: GaussianPosterior,
        base_optimizer: type[torch.optim.Optimizer] = torch.optim.SGD,
        rho: float = 0.05,
        metric: str | Metric = Metric.FISHER,
        perturb: Iterable[str] = ("mean", "log_std"),
        damping: float = 1.0,
        *,
        prior: LowRankGaussian | GaussianPosterior | None = None,
        kl_weight: float = 0.0,
        decay_covariance: bool = False,
        block_lr_scale: Mapping[str, float] | None = None,
        resample: bool = True,
        perturb_every: int = 1,
        **base_kwargs: Any,
    ) -> None:
        if not isinstance(posterior, GaussianPosterior):
            raise TypeError(f"SABMA trains a GaussianPosterior, got {type(posterior).__name__}")
        if not damping > 0:
            raise ValueError(f"damping must be > 0, got {damping!r}")
        if not kl_weight >= 0:
            raise ValueError(f"kl_weight must be >= 0, got {kl_weight!r}")
        if kl_weight > 0 and prior is None:
            raise ValueError("kl_weight > 0 needs a prior")
        try:
            metric = Metric(metric)
        except ValueError:
            raise ValueError(
                f"metric must be one of {[m.value for m in Metric]}, got {metric!r}"
            ) from None
        perturb = (perturb,) if isinstance(perturb, str) else tuple(perturb)
        if not perturb or any(b not in BLOCKS for b in perturb):
            raise ValueError(f"perturb must be a non-empty subset of {BLOCKS}, got {perturb!r}")

        groups: list[dict[str, Any]] = [
            {"params": [posterior.mean], "block": "mean"},
            {"params": [posterior.log_std], "block": "log_std"},
        ]
        if posterior.rank:
            groups.append({"params": [posterior.factor], "block": "factor"})
        if not decay_covariance:
            for group in groups[1:]:
                group["weight_decay"] = 0.0
        for block, scale in (block_lr_scale or {}).items():
            if block not in BLOCKS or not scale >= 0:
                raise ValueError(
                    f"block_lr_scale takes blocks of {BLOCKS} and scales >= 0, "
                    f"got {block!r}: {scale!r}"
                )
            if "lr" not in base_kwargs:
                raise ValueError("block_lr_scale needs an explicit lr")
            for group in groups:
                if group["block"] == block:
                    group["lr"] = base_kwargs["lr"] * scale
        super().__init__(groups, base_optimizer, rho, base_kwargs, perturb_every)
        self.posterior = posterior
        self.metric = metric
        self.perturb = tuple(
            b for b in BLOCKS if b in perturb and (b != "factor" or posterior.rank)
        )
        self.damping = damping
        self.prior = prior
        self.kl_weight = kl_weight
        self.resample = resample
        # The first pass of a two-pass step only forms ε: when D is not perturbed, that pass
        # skips D's gradient (a (d, K) outer product); the posterior is told so between steps.
        self._skip_factor_in_first_pass = bool(posterior.rank) and "factor" not in self.perturb
        self._first_pass_mode()

    def _block_params(self) -> dict[str, nn.Parameter]:
        return {g["block"]: g["params"][0] for g in self.param_groups}

    def perturbation(self) -> list[tuple[Tensor, Tensor]]:
        params = self._block_params()
        grads = {b: g for b in self.perturb if (g := params[b].grad) is not None}
        step = self.block_perturbation(grads) if grads else {}
        return [(params[b], eps) for b, eps in step.items()]

    @torch.no_grad()
    def block_perturbation(self, grads: dict[str, Tensor]) -> dict[str, Tensor]:
        """ε* for the given block gradients (empty when the gradient is zero or ρ = 0)."""
        rho = self.rho
        if self.metric is Metric.EUCLIDEAN:
            direction = dict(grads)
        else:
            q = self.posterior.gaussian()
            q = LowRankGaussian(q.mean.detach(), q.var.detach(), q.factor.detach())
            try:
                direction = natural_direction(q, grads, self.damping)
            except LinAlgError as err:  # Σ's capacitance is not definite
                raise FloatingPointError(
                    "SABMA: the posterior's covariance is not finite or not positive definite "
                    f"({str(err).splitlines()[0]}); training has diverged (lower the learning rate)"
                ) from None
        sq_norm = float(dot(grads, direction))
        if not sq_norm > 0 or rho == 0:
            return {}
        t = rho / math.sqrt(sq_norm)
        if self.metric is Metric.FISHER and "factor" in direction:
            t = exact_kl_step(q, self.posterior.log_std.detach(), direction, rho**2 / 2, t)
        return {b: t * v for b, v in direction.items()}

    def _first_pass_mode(self) -> None:
        self.posterior.factor_grad = not self._skip_factor_in_first_pass

    def _on_perturb(self) -> None:
        self.posterior.update_running_stats = False
        self.posterior.factor_grad = True

    def _on_restore(self) -> None:
        self.posterior.update_running_stats = True

    def _before_reused_pass(self) -> None:
        self.posterior.factor_grad = True

    def _before_update(self) -> None:
        if self.kl_weight > 0 and self.prior is not None:
            self._add_kl_gradient()

    def _after_update(self) -> None:
        if self.resample:
            self.posterior.resample()
        self._first_pass_mode()

    def _add_kl_gradient(self) -> None:
        params = self._block_params()
        blocks = list(params)
        with torch.enable_grad():
            kl = self.kl_weight * self.posterior.kl_to(self.prior)  # type: ignore[arg-type]
            kl_grads = torch.autograd.grad(kl, [params[b] for b in blocks], allow_unused=True)
        for block, g in zip(blocks, kl_grads, strict=True):
            if g is not None:
                p = params[block]
                p.grad = g.clone() if p.grad is None else p.grad.add_(g)
