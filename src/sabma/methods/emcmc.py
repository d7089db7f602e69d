"""Entropy-MCMC (Li & Zhang, 2023): SGLD on the subset w coupled to a guiding variable w_a.

The joint density exp(−N·[U(w) + ‖w − w_a‖²/(2η)] / T) has, as the marginal of w_a, the
(exponentiated) local entropy of the posterior at scale η/N: w_a is drawn toward flat basins and
pulls w along. Both are sampled jointly, simultaneously, by the dynamics of
:mod:`sabma.methods.csgld` (same U, momentum, noise, cycles and sampling phases) on the gradients

    ∇_w = ∇U(w) + (w − w_a)/η,   ∇_{w_a} = (w_a − w)/η.

At momentum 0 that is w ← w − lr_k ∇_w + √(2·lr_k·T/N) ξ and the same for w_a with ξ'.
η = ``method.emcmc_eta``. The kept samples are the guide w_a (``method.emcmc_keep = "guide"``,
the flat-basin samples) or w (``"model"``). The coupling is stable only for lr < η (checked).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sabma.config import Config
from sabma.methods.base import section_types
from sabma.methods.csgld import CSGLDMethod, CSGLDOptions
from sabma.methods.failures import UnstableSetting
from sabma.models.inputs import Inputs
from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian

KEEP = ("guide", "model")


@dataclass
class EMCMCOptions(CSGLDOptions):
    """cSGLD's cycles, sampling end and noise, with the guide's coupling."""

    eta: float = 0.03  # coupling scale η of ‖w − w_a‖²/(2η)
    keep: str = "guide"  # keep the guide w_a (flat basins) or the model w


class EMCMCMethod(CSGLDMethod):
    name = "emcmc"
    less_noise = "a lower method.emcmc.temperature"

    @classmethod
    def bounds(cls, cfg: Config) -> list[tuple[str, float, float, bool]]:
        m = cfg.method
        return [
            *super().bounds(cfg),
            ("method.emcmc.temperature", m.emcmc.temperature, 0, False),
            ("method.emcmc.eta", m.emcmc.eta, 0, True),
        ]

    summary = "Entropy-MCMC: cyclical SGLD coupled to a flat-basin guide (method.emcmc)"
    knob = "method.emcmc.eta"
    knob_grid = (0.01, 0.03, 0.1)
    sections = section_types(emcmc=EMCMCOptions)

    def __init__(self) -> None:
        super().__init__()
        self.guide: Tensor | None = None
        self.guide_buffer: Tensor | None = None  # the guide's heavy-ball buffer (as torch SGD's)
        self._gap: Tensor | None = None  # w − w_a at the step's first pass

    def sampler_options(self, cfg: Config) -> EMCMCOptions:
        return cfg.method.emcmc

    @staticmethod
    def check(cfg: Config) -> None:
        keep = cfg.method.emcmc.keep
        if keep not in KEEP:
            raise ValueError(f"method.emcmc.keep must be one of {KEEP}, got {keep!r}")

    def setup(
        self, posterior: GaussianPosterior, prior: LowRankGaussian | None, cfg: Config, n: int
    ) -> None:
        eta = cfg.method.emcmc.eta
        if not eta > cfg.optim.lr:
            raise UnstableSetting(
                f"method.emcmc.eta ({eta}) must exceed optim.lr ({cfg.optim.lr}) for a stable "
                "coupling"
            )
        super().setup(posterior, prior, cfg, n)
        self.guide = posterior.mean.detach().clone()
        self.guide_buffer = torch.zeros_like(self.guide)

    def loss(self, posterior: GaussianPosterior, x: Inputs, y: Tensor) -> tuple[Tensor, Tensor]:
        """The potential plus the coupling ‖w − w_a‖²/(2η) to the guide w_a."""
        assert self.guide is not None
        potential, data_loss = self.potential(posterior, x, y)
        gap = posterior.mean - self.guide  # w − w_a, before either moves
        self._gap = gap.detach()
        return potential + gap.pow(2).sum() / (2 * self._cfg.method.emcmc.eta), data_loss

    @torch.no_grad()
    def after_update(self, posterior: GaussianPosterior, optimizer: torch.optim.Optimizer) -> None:
        """The guide's own heavy-ball step on the coupling, then the Langevin noise on both."""
        assert self.guide is not None and self.guide_buffer is not None and self._gap is not None
        eta, momentum = self._cfg.method.emcmc.eta, self._cfg.optim.momentum
        lr = optimizer.param_groups[0]["lr"]
        self.guide_buffer.mul_(momentum).sub_(self._gap / eta)
        self.guide.sub_(self.guide_buffer, alpha=lr)
        scale = self.langevin_scale(lr)
        if scale > 0:
            buffer = optimizer.state[posterior.mean].get("momentum_buffer")
            for w, buf in ((posterior.mean, buffer), (self.guide, self.guide_buffer)):
                self.add_to_velocity(w, buf, scale * torch.randn_like(w), lr)
        self._step += 1

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "guide": self.guide, "guide_buffer": self.guide_buffer}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        assert self.guide is not None and self.guide_buffer is not None
        self.guide.copy_(state["guide"])
        self.guide_buffer.copy_(state["guide_buffer"])

    def kept(self, posterior: GaussianPosterior) -> Tensor:
        if self._cfg.method.emcmc.keep == "guide":
            assert self.guide is not None
            return self.guide.clone()
        return super().kept(posterior)
