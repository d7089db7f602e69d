"""SA-BMA: a diagonal + low-rank Gaussian trained with the KL-ball sharpness-aware step."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from sabma.config import Config
from sabma.methods.base import Method, section_types
from sabma.methods.failures import UnstableSetting
from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian
from sabma.step.options import SABMAOptions, checked_perturb
from sabma.step.sabma import SABMA
from sabma.variance.natural import NaturalVariance
from sabma.variance.options import VarianceOptions


def check_kl_stability(
    prior: LowRankGaussian | None, kl_weight: float, lr: float, momentum: float
) -> None:
    """Refuse a learning rate at which the prior term alone makes SGD diverge.

    On the mean, ``kl_weight · KL(q‖p)`` (or ``kl_weight · (−log p)``) is a quadratic with
    curvature up to kl_weight · max diag(Σ_p⁻¹); heavy-ball SGD on a quadratic of curvature λ is
    stable only for lr · λ < 2 (1 + momentum).
    """
    if prior is None or kl_weight == 0:
        return
    curvature = kl_weight * float(prior.precision_diag().max())
    if lr * curvature >= 2 * (1 + momentum):
        raise UnstableSetting(
            f"optim.lr={lr} is unstable for the prior term (curvature weight·max 1/σ²_prior = "
            f"{curvature:.3g}; need lr < {2 * (1 + momentum) / curvature:.3g}): lower optim.lr, "
            "widen the prior (prior.norm_std, prior.head_var) or lower the prior term's weight "
            "(raise method.variance.ess; method.variance.beta, method.ptl.weight)"
        )


def natural_variance_options(cfg: Config, n: int, method: Method) -> NaturalVariance:
    """The natural-gradient variance of ``cfg.method.variance`` for a training split of n
    examples."""
    m = cfg.method.variance
    steps_per_epoch = math.ceil(n / cfg.optim.batch_size)
    if m.curvature == "fisher" and method.train_inputs is None:
        raise ValueError("method.variance.curvature=fisher needs the training inputs")
    return NaturalVariance(
        ess=m.ess or float(n),
        temperature=m.temperature,
        curvature=m.curvature,
        source=m.curvature_source,
        beta2=m.curvature_beta2,
        data=method.train_inputs if m.curvature == "fisher" else None,
        refresh_every=m.refresh_epochs * steps_per_epoch,
        label_samples=m.fisher_samples,
        max_examples=m.fisher_examples,
        batch_size=cfg.optim.batch_size,
    )


class SABMAMethod(Method):
    name = "sabma"
    less_noise = "a lower method.variance.temperature"

    @staticmethod
    def check(cfg: Config) -> None:
        cfg.method.variance.check()
        try:
            checked_perturb(cfg.method.sabma.perturb)
        except ValueError as err:
            raise ValueError(f"method.sabma.{err}") from None

    @classmethod
    def bounds(cls, cfg: Config) -> list[tuple[str, float, float, bool]]:
        m = cfg.method
        return [
            *super().bounds(cfg),
            ("method.sabma.rank", m.sabma.rank, 0, False),
            ("method.sabma.rho", m.sabma.rho, 0, False),
            ("method.sabma.perturb_every", m.sabma.perturb_every, 1, False),
            ("method.variance.beta", m.variance.beta, 0, False),
            ("method.variance.temperature", m.variance.temperature, 0, True),
            ("method.variance.ess", m.variance.ess, 0, False),
            ("method.variance.refresh_epochs", m.variance.refresh_epochs, 1, False),
            ("method.variance.fisher_samples", m.variance.fisher_samples, 1, False),
            ("method.variance.fisher_examples", m.variance.fisher_examples, 1, False),
        ]

    summary = "SA-BMA: Gaussian posterior (diag + rank K) with the Fisher-KL sharpness-aware step"
    knob = "method.sabma.rho"
    knob_grid = (0.3, 1.0, 3.0)
    point = False
    trains_at_mean = False
    sections = section_types(sabma=SABMAOptions, variance=VarianceOptions)

    def rank(self, cfg: Config) -> int:
        return cfg.method.sabma.rank

    def optimizer(
        self, posterior: GaussianPosterior, prior: LowRankGaussian | None, cfg: Config, n: int
    ) -> torch.optim.Optimizer:
        m = cfg.method.sabma
        return build_sabma(
            self,
            posterior,
            prior,
            cfg,
            n,
            rho=m.rho,
            metric=m.metric,
            perturb=m.perturb,
            perturb_every=m.perturb_every,
        )


def build_sabma(
    method: Method,
    posterior: GaussianPosterior,
    prior: LowRankGaussian | None,
    cfg: Config,
    n: int,
    rho: float,
    metric: str = "fisher",
    perturb: Sequence[str] = ("mean", "log_std"),
    perturb_every: int = 1,
) -> SABMA:
    """The SA-BMA optimiser of ``cfg`` with the variance of ``cfg.method.variance`` (ρ = 0:
    natural-gradient VI with the same variance)."""
    o, m = cfg.optim, cfg.method.variance
    step: dict[str, Any] = {
        "rho": rho,
        "perturb_every": perturb_every,
        "metric": metric,
        "perturb": list(perturb),
        "prior": prior,
        "lr": o.lr,
        "momentum": o.momentum,
        "weight_decay": o.weight_decay,
    }
    if m.kind == "natural":
        if prior is None:
            raise ValueError("method.variance.kind=natural needs a prior (prior.kind)")
        options = natural_variance_options(cfg, n, method)
        check_kl_stability(prior, 1.0 / options.ess, o.lr, o.momentum)
        return SABMA(posterior, torch.optim.SGD, variance=options, **step)
    kl_weight = m.beta / n if prior is not None else 0.0
    check_kl_stability(prior, kl_weight, o.lr, o.momentum)
    return SABMA(
        posterior,
        torch.optim.SGD,
        variance="gradient",
        kl_weight=kl_weight,
        block_lr_scale={"log_std": m.log_std_lr_scale, "factor": m.factor_lr_scale},
        **step,
    )
