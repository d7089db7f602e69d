"""Point estimates of the Bayesian subset: SGD (MAP without a prior term) and SAM."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from sabma.config import Config
from sabma.methods.base import Method, section_types
from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian
from sabma.step.sam import SAM


@dataclass
class SAMOptions:
    rho: float = 0.05  # the Euclidean radius of the ascent
    perturb_every: int = 1  # ε formed every k steps, reused in between


class SGDMethod(Method):
    name = "sgd"
    summary = "SGD fine-tuning of the subset (a point estimate)"

    def optimizer(
        self, posterior: GaussianPosterior, prior: LowRankGaussian | None, cfg: Config, n: int
    ) -> torch.optim.Optimizer:
        o = cfg.optim
        return torch.optim.SGD(
            [posterior.mean], lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
        )


class SAMMethod(Method):
    name = "sam"

    @classmethod
    def bounds(cls, cfg: Config) -> list[tuple[str, float, float, bool]]:
        options = getattr(cfg.method, cls.name)  # sam, and the subclasses' own sections
        return [
            *super().bounds(cfg),
            (f"method.{cls.name}.rho", options.rho, 0, False),
            (f"method.{cls.name}.perturb_every", options.perturb_every, 1, False),
        ]

    summary = "SAM (Foret et al., 2021): ascent to ρ·g/‖g‖, update from there (method.sam)"
    knob = "method.sam.rho"
    knob_grid = (0.01, 0.05, 0.2)
    optimizer_class: ClassVar[type[SAM]] = SAM
    sections = section_types(sam=SAMOptions)

    def sam_options(self, cfg: Config) -> SAMOptions:
        """The ascent's radius and period: ``cfg.method.sam``."""
        return cfg.method.sam

    def ascent_options(self, cfg: Config) -> dict[str, Any]:
        """Extra arguments of the SAM-type optimiser (none for SAM itself)."""
        return {}

    def optimizer(
        self, posterior: GaussianPosterior, prior: LowRankGaussian | None, cfg: Config, n: int
    ) -> torch.optim.Optimizer:
        o, options = cfg.optim, self.sam_options(cfg)
        return self.optimizer_class(
            [posterior.mean],
            torch.optim.SGD,
            rho=options.rho,
            model=posterior.model,
            perturb_every=options.perturb_every,
            lr=o.lr,
            momentum=o.momentum,
            weight_decay=o.weight_decay,
            **self.ascent_options(cfg),
        )
