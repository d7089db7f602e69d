"""Fisher SAM (Kim et al., 2022) as a point-estimate method."""

from __future__ import annotations

import torch

from sabma.config import Config
from sabma.methods.base import Method
from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian
from sabma.step.fsam import FSAM


class FSAMMethod(Method):
    name = "fsam"
    summary = "Fisher SAM (Kim et al., 2022): SAM ball preconditioned by 1 + η·g² (method.fsam_eta)"

    def optimizer(
        self, posterior: GaussianPosterior, prior: LowRankGaussian | None, cfg: Config, n: int
    ) -> torch.optim.Optimizer:
        o = cfg.optim
        return FSAM(
            [posterior.mean],
            torch.optim.SGD,
            rho=cfg.method.sam_rho,
            eta=cfg.method.fsam_eta,
            model=posterior.model,
            lr=o.lr,
            momentum=o.momentum,
            weight_decay=o.weight_decay,
        )
