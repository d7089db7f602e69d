"""Cyclical stochastic-gradient MCMC (Zhang et al., 2020) over the subset: cSGLD / cSGHMC.

The learning rate follows M cosine cycles, lr_k = ½·lr·(1 + cos(π·mod(k, L)/L)), L steps per
cycle. Every step descends the potential U(w) = L̂(w) − log p(w)/N (L̂ the mean minibatch loss,
p the run's prior, so that the sampled posterior is proper) with the shared heavy-ball update
(momentum m = ``optim.momentum``, velocity v = −lr·buf as in ``torch.optim.SGD``); in the last
``method.csgld.sample_fraction`` of each cycle Langevin noise enters the velocity,

    v ← m·v − lr_k ∇U(w) + √(2·(1 − m)·lr_k·T / N) · ξ,   w ← w + v,   ξ ~ N(0, I),

which samples exp(−N·U/T) (T = ``method.csgld_temperature``); the subset is kept at the end of
every epoch in that phase, and the predictive averages over the kept samples. m = 0 is cSGLD
(w ← w − lr_k ∇U + √(2·lr_k·T/N) ξ); the default m = 0.9 is cSGHMC with friction 1 − m, the
paper's other sampler — within this budget (120 steps on the default task) plain SGLD at a stable
step leaves the new head untrained (seed 0: test NLL 1.93).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn.functional import cross_entropy

from sabma.config import Config
from sabma.methods.base import Method, section_types
from sabma.methods.sabma_method import check_kl_stability
from sabma.models import inputs
from sabma.models.inputs import Inputs
from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian


@dataclass
class CSGLDOptions:
    cycles: int = 1  # number of cosine cycles; chosen on validation
    sample_fraction: float = 0.3  # the noisy, sampling end of each cycle
    temperature: float = 1.0  # T of the Langevin noise √(2·lr·T/N)


class CSGLDMethod(Method):
    name = "csgld"
    less_noise = "a lower method.csgld.temperature"

    @classmethod
    def bounds(cls, cfg: Config) -> list[tuple[str, float, float, bool]]:
        m = cfg.method
        return [
            *super().bounds(cfg),
            ("method.csgld.temperature", m.csgld.temperature, 0, False),
        ]

    summary = "cyclical SG-MCMC (cSGHMC, cSGLD at momentum 0): samples at the end of each cycle"
    knob = "method.csgld.temperature"
    knob_grid = (0.01, 0.1, 1.0)
    point = False
    select_best = False
    sections = section_types(csgld=CSGLDOptions)

    def __init__(self) -> None:
        self._samples: list[Tensor] = []
        self._n = 1
        self._steps_per_epoch = 1
        self._step = 0
        self._cfg = Config()
        self._prior: LowRankGaussian | None = None

    def sampler_options(self, cfg: Config) -> CSGLDOptions:
        """The cycles, sampling end and noise of ``cfg.method.csgld``."""
        return cfg.method.csgld

    def _cycle_length(self, cfg: Config) -> int:
        cycles = self.sampler_options(cfg).cycles
        if cycles < 1 or cfg.optim.epochs < cycles:
            raise ValueError(
                f"method.{self.name}.cycles must be between 1 and optim.epochs, got {cycles}"
            )
        return math.ceil(cfg.optim.epochs * self._steps_per_epoch / cycles)

    def _sampling(self, step: int, cfg: Config) -> bool:
        length = self._cycle_length(cfg)
        return (step % length) / length >= 1.0 - self.sampler_options(cfg).sample_fraction

    def setup(
        self, posterior: GaussianPosterior, prior: LowRankGaussian | None, cfg: Config, n: int
    ) -> None:
        check_kl_stability(prior, 1.0 / n, cfg.optim.lr, cfg.optim.momentum)
        self._n, self._cfg, self._prior = n, cfg, prior

    def optimizer(
        self, posterior: GaussianPosterior, prior: LowRankGaussian | None, cfg: Config, n: int
    ) -> torch.optim.Optimizer:
        o = cfg.optim
        return torch.optim.SGD(
            [posterior.mean], lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
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
        self, posterior: GaussianPosterior, x: Inputs, y: Tensor
    ) -> tuple[Tensor, Tensor]:
        """(U(w), L̂(w)) at the current subset weights."""
        data_loss = cross_entropy(inputs.call(posterior.mean_forward, x), y)
        if self._prior is None:
            return data_loss, data_loss
        return data_loss - self._prior.log_prob(posterior.mean) / self._n, data_loss

    def langevin_scale(self, lr: float) -> float:
        """The standard deviation √(2·(1 − m)·lr·T/N) of a step's noise, 0 outside sampling."""
        if not self._sampling(self._step, self._cfg):
            return 0.0
        friction = 1.0 - self._cfg.optim.momentum
        return math.sqrt(
            2.0 * friction * lr * self.sampler_options(self._cfg).temperature / self._n
        )

    @staticmethod
    @torch.no_grad()
    def add_to_velocity(w: Tensor, buffer: Tensor | None, noise: Tensor, lr: float) -> None:
        """Add ``noise`` to the velocity v = −lr·buffer of the step just taken (and so to w)."""
        w.add_(noise)
        if buffer is not None and lr > 0:
            buffer.sub_(noise / lr)

    def loss(self, posterior: GaussianPosterior, x: Inputs, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.potential(posterior, x, y)

    def after_update(self, posterior: GaussianPosterior, optimizer: torch.optim.Optimizer) -> None:
        """The Langevin noise, added to the velocity of the step just taken."""
        lr = optimizer.param_groups[0]["lr"]
        scale = self.langevin_scale(lr)
        if scale > 0:
            buffer = optimizer.state[posterior.mean].get("momentum_buffer")
            noise = scale * torch.randn_like(posterior.mean)
            self.add_to_velocity(posterior.mean, buffer, noise, lr)
        self._step += 1

    def state_dict(self) -> dict[str, Any]:
        return {"samples": list(self._samples), "step": self._step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._samples = list(state["samples"])
        self._step = int(state["step"])

    def kept(self, posterior: GaussianPosterior) -> Tensor:
        """The weights kept as a sample at the end of a sampling epoch."""
        return posterior.mean.detach().clone()

    def on_epoch_end(self, posterior: GaussianPosterior, epoch: int, cfg: Config) -> None:
        if self._sampling(self._step - 1, cfg):
            self._samples.append(self.kept(posterior))

    def finish(self, posterior: GaussianPosterior, cfg: Config) -> None:
        if not self._samples:
            raise ValueError(
                f"{self.name} kept no sample: raise method.{self.name}.sample_fraction"
            )

    def samples(self) -> Tensor | None:
        return torch.stack(self._samples) if self._samples else None
