"""Cyclical SGLD (Zhang et al., 2020) over the subset.

The learning rate follows M cosine cycles, lr_k = ½·lr·(1 + cos(π·mod(k, L)/L)), L steps per
cycle. Every step descends the potential U(w) = L̂(w) − log p(w)/N (L̂ the mean minibatch loss,
p the run's prior, so that the sampled posterior is proper); in the last
``method.csgld_sample_fraction`` of each cycle Langevin noise is added,

    w ← w − lr_k ∇U(w) + √(2·lr_k·T / N) · ξ,   ξ ~ N(0, I),

which samples exp(−N·U/T) (T = ``method.csgld_temperature``), and the subset is kept at the end
of every epoch in that phase. The predictive averages over the kept samples. Plain SGD without
momentum, as in SGLD.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn.functional import cross_entropy

from sabma.config import Config
from sabma.methods.base import Method
from sabma.methods.sabma_method import check_kl_stability
from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian


class CSGLDMethod(Method):
    name = "csgld"
    summary = "cyclical SGLD: cosine cycles, Langevin noise and samples at the end of each cycle"
    point = False
    select_best = False

    def __init__(self) -> None:
        self._samples: list[Tensor] = []
        self._n = 1
        self._steps_per_epoch = 1
        self._step = 0
        self._cfg = Config()
        self._prior: LowRankGaussian | None = None

    def _cycle_length(self, cfg: Config) -> int:
        cycles = cfg.method.csgld_cycles
        if cycles < 1 or cfg.optim.epochs < cycles:
            raise ValueError(
                f"method.csgld_cycles must be between 1 and optim.epochs, got {cycles}"
            )
        return math.ceil(cfg.optim.epochs * self._steps_per_epoch / cycles)

    def _sampling(self, step: int, cfg: Config) -> bool:
        length = self._cycle_length(cfg)
        return (step % length) / length >= 1.0 - cfg.method.csgld_sample_fraction

    def optimizer(
        self, posterior: GaussianPosterior, prior: LowRankGaussian | None, cfg: Config, n: int
    ) -> torch.optim.Optimizer:
        self._n, self._cfg, self._prior = n, cfg, prior
        check_kl_stability(prior, 1.0 / n, cfg.optim.lr, 0.0)
        return torch.optim.SGD(
            [posterior.mean], lr=cfg.optim.lr, momentum=0.0, weight_decay=cfg.optim.weight_decay
        )

    def schedule(
        self, optimizer: torch.optim.Optimizer, steps_per_epoch: int, cfg: Config
    ) -> torch.optim.lr_scheduler.LRScheduler:
        self._steps_per_epoch = steps_per_epoch
        length = self._cycle_length(cfg)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda k: 0.5 * (1.0 + math.cos(math.pi * (k % length) / length))
        )

    def potential(
        self, posterior: GaussianPosterior, x: Tensor, y: Tensor
    ) -> tuple[Tensor, Tensor]:
        """(U(w), L̂(w)) at the current subset weights."""
        data_loss = cross_entropy(posterior.mean_forward(x), y)
        if self._prior is None:
            return data_loss, data_loss
        return data_loss - self._prior.log_prob(posterior.mean) / self._n, data_loss

    def langevin_scale(self, lr: float) -> float:
        """The standard deviation √(2·lr·T/N) of the noise of a step, or 0 outside sampling."""
        if not self._sampling(self._step, self._cfg):
            return 0.0
        return math.sqrt(2.0 * lr * self._cfg.method.csgld_temperature / self._n)

    def step(
        self, posterior: GaussianPosterior, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor
    ) -> float:
        optimizer.zero_grad()
        potential, data_loss = self.potential(posterior, x, y)
        potential.backward()
        optimizer.step()
        scale = self.langevin_scale(optimizer.param_groups[0]["lr"])
        if scale > 0:
            with torch.no_grad():
                posterior.mean.add_(scale * torch.randn_like(posterior.mean))
        self._step += 1
        return data_loss.item()

    def kept(self, posterior: GaussianPosterior) -> Tensor:
        """The weights kept as a sample at the end of a sampling epoch."""
        return posterior.mean.detach().clone()

    def on_epoch_end(self, posterior: GaussianPosterior, epoch: int, cfg: Config) -> None:
        if self._sampling(self._step - 1, cfg):
            self._samples.append(self.kept(posterior))

    def finish(self, posterior: GaussianPosterior, cfg: Config) -> None:
        if not self._samples:
            raise ValueError(f"{self.name} kept no sample: raise method.csgld_sample_fraction")

    def samples(self) -> Tensor | None:
        return torch.stack(self._samples) if self._samples else None
