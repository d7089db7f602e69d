"""bSAM (Möllenhoff & Khan, 2023) over the subset, with the run's prior.

The optimiser is :class:`sabma.step.bsam.BSAM`. Its prior term is the run's prior with the weight
of the prior/KL term of every method here, β = ``method.beta``, coordinate-wise: mean μ₀ = the
prior mean, precision per example δᵢ = β/(N·vᵢ) with vᵢ the prior's marginal variance. With the
default β = 0 (like SGD, SAM and SA-BMA, which fit the data term alone) δ = ``optim.weight_decay``
and the damping γ = ``method.bsam_gamma`` sets the variance floor 1/(N·γ).
β₁ = ``optim.momentum``, β₂ = ``method.bsam_beta2``, ρ = ``method.bsam_rho``. Since s ≈ δ + γ while
gradients are small, α/s is the step size: α = ``optim.lr``·γ/(1 − β₁) gives the step of
heavy-ball SGD at ``optim.lr`` (the same schedule and budget as every method).
The predictive is BMA over q = N(μ, diag(1/(N·s))); ``log_std`` follows s after every step, so
model selection sees it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sabma.config import Config
from sabma.methods.base import Method, section_types
from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian
from sabma.step.bsam import BSAM


@dataclass
class BSAMOptions:
    rho: float = 0.05  # ρ of the adversarial step ρ·g/s
    beta2: float = 0.999  # β₂ of the precision s
    gamma: float = 100.0  # damping γ (variance floor 1/(N·γ)); chosen on validation
    beta: float = 0.0  # weight of the prior's precision added to s (0: no prior term)


class BSAMMethod(Method):
    name = "bsam"
    less_noise = "a larger method.bsam.gamma"

    @classmethod
    def bounds(cls, cfg: Config) -> list[tuple[str, float, float, bool]]:
        m = cfg.method
        return [
            *super().bounds(cfg),
            ("method.bsam.rho", m.bsam.rho, 0, False),
            ("method.bsam.beta", m.bsam.beta, 0, False),
        ]

    summary = "bSAM: Bayesian SAM, mean-field Gaussian with an Adam-like precision (method.bsam)"
    knob = "method.bsam.rho"
    knob_grid = (0.01, 0.05, 0.2)
    point = False
    sections = section_types(bsam=BSAMOptions)

    def supports_loss_scaling(self, cfg: Config) -> bool:
        return False  # the scaled step (sabma.step.amp) does not draw bSAM's noisy first pass

    def optimizer(
        self, posterior: GaussianPosterior, prior: LowRankGaussian | None, cfg: Config, n: int
    ) -> torch.optim.Optimizer:
        o, m = cfg.optim, cfg.method.bsam
        optimizer = BSAM(
            [posterior.mean],
            lr=o.lr * m.gamma / (1 - o.momentum),
            n_data=n,
            rho=m.rho,
            delta=o.weight_decay,
            betas=(o.momentum, m.beta2),
            gamma=m.gamma,
            model=posterior.model,
        )
        if prior is not None and m.beta > 0:
            marginal_var = prior.var + prior.factor.pow(2).sum(1)
            optimizer.set_prior(posterior.mean, prior.mean, m.beta / marginal_var)
        self._sync_std(posterior, optimizer)
        return optimizer

    @staticmethod
    @torch.no_grad()
    def _sync_std(posterior: GaussianPosterior, optimizer: BSAM) -> None:
        posterior.log_std.copy_(0.5 * optimizer.variance(posterior.mean).log())

    def after_update(self, posterior: GaussianPosterior, optimizer: torch.optim.Optimizer) -> None:
        assert isinstance(optimizer, BSAM)
        self._sync_std(posterior, optimizer)
