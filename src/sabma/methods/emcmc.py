"""Entropy-MCMC (Li & Zhang, 2023): SGLD on the subset w coupled to a guiding variable w_a.

The joint density exp(−N·[U(w) + ‖w − w_a‖²/(2η)] / T) has, as the marginal of w_a, the
(exponentiated) local entropy of the posterior at scale η/N: w_a is drawn toward flat basins and
pulls w along. Both are sampled jointly by Langevin dynamics on the cyclical schedule of
:mod:`sabma.methods.csgld` (same U, noise, cycles and sampling phases), simultaneously:

    w   ← w   − lr_k (∇U(w) + (w − w_a)/η) + √(2·lr_k·T/N) ξ
    w_a ← w_a − lr_k (w_a − w)/η            + √(2·lr_k·T/N) ξ'

η = ``method.emcmc_eta``. The kept samples are the guide w_a (``method.emcmc_keep = "guide"``,
the flat-basin samples) or w (``"model"``). Stable only for lr < η (checked).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sabma.config import Config
from sabma.methods.csgld import CSGLDMethod
from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian

KEEP = ("guide", "model")


class EMCMCMethod(CSGLDMethod):
    name = "emcmc"
    summary = "Entropy-MCMC: cyclical SGLD coupled to a flat-basin guide (method.emcmc_eta)"

    def __init__(self) -> None:
        super().__init__()
        self.guide: Tensor | None = None

    def optimizer(
        self, posterior: GaussianPosterior, prior: LowRankGaussian | None, cfg: Config, n: int
    ) -> torch.optim.Optimizer:
        eta, keep = cfg.method.emcmc_eta, cfg.method.emcmc_keep
        if not eta > cfg.optim.lr:
            raise ValueError(
                f"method.emcmc_eta ({eta}) must exceed optim.lr ({cfg.optim.lr}) for a stable "
                "coupling"
            )
        if keep not in KEEP:
            raise ValueError(f"method.emcmc_keep must be one of {KEEP}, got {keep!r}")
        self.guide = posterior.mean.detach().clone()
        return super().optimizer(posterior, prior, cfg, n)

    def step(
        self, posterior: GaussianPosterior, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor
    ) -> float:
        assert self.guide is not None
        eta = self._cfg.method.emcmc_eta
        optimizer.zero_grad()
        potential, data_loss = self.potential(posterior, x, y)
        gap = posterior.mean - self.guide  # w − w_a, before either moves
        (potential + gap.pow(2).sum() / (2 * eta)).backward()
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        with torch.no_grad():
            self.guide.add_(gap.detach(), alpha=lr / eta)
            scale = self.langevin_scale(lr)
            if scale > 0:
                posterior.mean.add_(scale * torch.randn_like(posterior.mean))
                self.guide.add_(scale * torch.randn_like(self.guide))
        self._step += 1
        return data_loss.item()

    def kept(self, posterior: GaussianPosterior) -> Tensor:
        if self._cfg.method.emcmc_keep == "guide":
            assert self.guide is not None
            return self.guide.clone()
        return super().kept(posterior)
