"""PTL (Shwartz-Ziv et al., 2022): fine-tuning with the pre-trained prior's log-density.

A point estimate trained on NLL − (λ/N)·log p(w), λ = ``method.ptl.weight``. With the ``swag`` or
``file`` prior this is "Pre-Train Your Loss"; with the isotropic prior it is L2 toward w_pre.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor
from torch.nn.functional import cross_entropy

from sabma.config import Config
from sabma.methods.base import section_types
from sabma.methods.point import SGDMethod
from sabma.methods.sabma_method import check_kl_stability
from sabma.models import inputs
from sabma.models.inputs import Inputs
from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian


@dataclass
class PTLOptions:
    weight: float = 0.01  # λ of −(λ/N)·log p(w); chosen on validation


class PTLMethod(SGDMethod):
    name = "ptl"

    @classmethod
    def bounds(cls, cfg: Config) -> list[tuple[str, float, float, bool]]:
        m = cfg.method
        return [
            *super().bounds(cfg),
            ("method.ptl.weight", m.ptl.weight, 0, False),
        ]

    summary = "PTL: SGD on NLL − (λ/N)·log p(w) with the (SWAG / file) prior"
    knob = "method.ptl.weight"
    knob_grid = (0.01, 1.0, 100.0)
    sections = section_types(ptl=PTLOptions)

    def __init__(self) -> None:
        self.prior: LowRankGaussian | None = None
        self.weight = 0.0

    def setup(
        self, posterior: GaussianPosterior, prior: LowRankGaussian | None, cfg: Config, n: int
    ) -> None:
        if prior is None:
            raise ValueError("method ptl needs a prior (prior.kind)")
        self.prior, self.weight = prior, cfg.method.ptl.weight / n
        check_kl_stability(prior, self.weight, cfg.optim.lr, cfg.optim.momentum)

    def loss(self, posterior: GaussianPosterior, x: Inputs, y: Tensor) -> tuple[Tensor, Tensor]:
        assert self.prior is not None
        data_loss = cross_entropy(inputs.call(posterior.mean_forward, x), y)
        return data_loss - self.weight * self.prior.log_prob(posterior.mean), data_loss
