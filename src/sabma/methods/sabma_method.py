"""SA-BMA: a diagonal + low-rank Gaussian trained with the KL-ball sharpness-aware step."""

from __future__ import annotations

import torch

from sabma.config import Config
from sabma.methods.base import Method
from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian
from sabma.step.sabma import SABMA


def check_kl_stability(
    prior: LowRankGaussian | None, kl_weight: float, lr: float, momentum: float
) -> None:
    """Refuse a learning rate at which the KL term alone makes SGD diverge.

    On the mean, ``kl_weight · KL(q‖p)`` is a quadratic with curvature up to
    kl_weight · max diag(Σ_p⁻¹); heavy-ball SGD on a quadratic of curvature λ is stable only for
    lr · λ < 2 (1 + momentum).
    """
    if prior is None or kl_weight == 0:
        return
    curvature = kl_weight * float(prior.precision_diag().max())
    if lr * curvature >= 2 * (1 + momentum):
        raise ValueError(
            f"optim.lr={lr} is unstable for the prior term (curvature weight/N·max 1/σ²_prior = "
            f"{curvature:.3g}; need lr < {2 * (1 + momentum) / curvature:.3g}): lower optim.lr "
            "or the prior term's weight (method.beta, method.ptl_weight), or widen the prior"
        )


class SABMAMethod(Method):
    name = "sabma"
    summary = "SA-BMA: Gaussian posterior (diag + rank K) with the Fisher-KL sharpness-aware step"
    point = False
    trains_at_mean = False

    def rank(self, cfg: Config) -> int:
        return cfg.method.rank

    def optimizer(
        self, posterior: GaussianPosterior, prior: LowRankGaussian | None, cfg: Config, n: int
    ) -> torch.optim.Optimizer:
        o, m = cfg.optim, cfg.method
        kl_weight = m.beta / n if prior is not None else 0.0
        check_kl_stability(prior, kl_weight, o.lr, o.momentum)
        return SABMA(
            posterior,
            torch.optim.SGD,
            rho=m.rho,
            perturb_every=m.perturb_every,
            metric=m.metric,
            perturb=m.perturb,
            prior=prior,
            kl_weight=kl_weight,
            block_lr_scale={"log_std": m.log_std_lr_scale, "factor": m.factor_lr_scale},
            lr=o.lr,
            momentum=o.momentum,
            weight_decay=o.weight_decay,
        )
