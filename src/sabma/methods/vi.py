"""Mean-field Gaussian VI with MOPED initialisation (Krishnan et al., 2020).

With ``method.variance.kind=natural`` (the default) this is natural-gradient VI (VON/IVON's variance
rule, Khan et al. 2018): the SA-BMA optimiser with ρ = 0 and no low-rank factor, i.e. the same
tempered-posterior objective, curvature estimate and σ² = T/(λ(h + δ)) as ``sabma`` — so the two
differ by the sharpness-aware ascent and the factor alone. With ``method.variance.kind=gradient`` it
is Bayes by Backprop (Blundell et al., 2015): E_q[NLL] + (β/N)·KL(q‖p), one reparameterised draw per
step, plain SGD on (μ, log σ).
MOPED sets the initial σ from the pre-trained weights, σᵢ = δ·|w_pre,i| (δ =
``method.vi.moped_delta``, floored at 10⁻⁸), for the normalization parameters; the new head starts
at ``init.head_std``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn.functional import cross_entropy

from sabma.config import Config
from sabma.methods.base import Method, section_types
from sabma.methods.sabma_method import build_sabma, check_kl_stability
from sabma.models import inputs
from sabma.models.inputs import Inputs
from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian
from sabma.variance.options import VarianceOptions


@dataclass
class VIOptions:
    moped_delta: float = 0.01  # initial σ = δ·|w_pre| (MOPED); σ and D: method.variance


class VIMethod(Method):
    name = "vi"
    less_noise = "a lower method.variance.temperature"
    summary = "mean-field Gaussian VI: natural-gradient (the SA-BMA variance, ρ = 0) or BBB"
    knob = "method.variance.temperature"
    knob_grid = (1e-4, 1e-3, 1e-2)
    sections = section_types(vi=VIOptions, variance=VarianceOptions)
    point = False
    trains_at_mean = False

    @staticmethod
    def check(cfg: Config) -> None:
        cfg.method.variance.check()

    @staticmethod
    def knob_unused(cfg: Config) -> str:
        if cfg.method.variance.kind != "natural":
            return (
                "method.variance.temperature applies to method.variance.kind=natural only "
                f"(got {cfg.method.variance.kind!r}; its KL weight is method.variance.beta)"
            )
        return ""

    def __init__(self) -> None:
        self.prior: LowRankGaussian | None = None
        self.kl_weight = 0.0
        self.natural = False

    @torch.no_grad()
    def initialise(
        self, posterior: GaussianPosterior, start: LowRankGaussian, is_head: Tensor, cfg: Config
    ) -> None:
        super().initialise(posterior, start, is_head, cfg)
        moped = (cfg.method.vi.moped_delta * posterior.mean.abs()).clamp_min(1e-8)
        posterior.log_std.copy_(torch.where(is_head, posterior.log_std, moped.log()))

    def setup(
        self, posterior: GaussianPosterior, prior: LowRankGaussian | None, cfg: Config, n: int
    ) -> None:
        self.natural = cfg.method.variance.kind == "natural"
        if self.natural:
            return
        self.prior = prior
        self.kl_weight = cfg.method.variance.beta / n if prior is not None else 0.0
        check_kl_stability(prior, self.kl_weight, cfg.optim.lr, cfg.optim.momentum)

    def optimizer(
        self, posterior: GaussianPosterior, prior: LowRankGaussian | None, cfg: Config, n: int
    ) -> torch.optim.Optimizer:
        if self.natural:
            return build_sabma(self, posterior, prior, cfg, n, rho=0.0)
        o = cfg.optim
        groups: list[dict[str, Any]] = [
            {"params": [posterior.mean]},
            {
                "params": [posterior.log_std],
                "weight_decay": 0.0,
                "lr": o.lr * cfg.method.variance.log_std_lr_scale,
            },
        ]
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)

    def loss(self, posterior: GaussianPosterior, x: Inputs, y: Tensor) -> tuple[Tensor, Tensor]:
        if self.natural:  # SABMA with ρ = 0 draws the noise itself
            return super().loss(posterior, x, y)
        posterior.resample()
        data_loss = cross_entropy(inputs.call(posterior, x), y)
        if self.kl_weight > 0 and self.prior is not None:
            return data_loss + self.kl_weight * posterior.kl_to(self.prior), data_loss
        return data_loss, data_loss
