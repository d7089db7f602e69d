"""SWAG (Maddox et al., 2019) and F-SWAG (SWAG with a SAM inner optimiser), over the subset.

The inner optimiser runs the shared schedule, whose cosine decay stops at ``method.swag.lr_ratio ×
lr``; from epoch ``method.swag.start`` on (0, the default: from half the budget, so a shorter budget
still collects), the subset is snapshotted after every ``method.swag.every``-th epoch (F-SWAG: the
same keys under ``method.fswag``). At the end the posterior becomes N(w̄, ½ diag(v) +
D̂D̂ᵀ/(2(K−1))) (:func:`sabma.posterior.swag.swag_to_gaussian`). SWAG's posterior is the average
over its collection phase, so it takes no best-epoch selection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sabma.config import Config
from sabma.config.sections import SWAGSnapshots
from sabma.methods.base import Method, section_types
from sabma.methods.point import SAMMethod, SAMOptions, SGDMethod
from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian
from sabma.posterior.swag import SWAGMoments, SWAGSchedule


@dataclass
class SWAGOptions(SWAGSnapshots):
    lr_ratio: float = 0.5  # the cosine schedule stops at this fraction of lr


@dataclass
class FSWAGOptions(SAMOptions, SWAGOptions):
    """SWAG's snapshots along SAM's iterates (ρ: the SAM ascent's radius)."""


class SWAGCollection(Method):
    """Collects SWAG moments of the mean after the chosen epochs and turns them into q."""

    @classmethod
    def bounds(cls, cfg: Config) -> list[tuple[str, float, float, bool]]:
        options = getattr(cfg.method, cls.name)  # swag, fswag
        return [
            *super().bounds(cfg),
            (f"method.{cls.name}.rank", options.rank, 0, False),
            (f"method.{cls.name}.lr_ratio", options.lr_ratio, 0, False),
        ]

    point = False
    select_best = False

    def __init__(self) -> None:
        self.moments: SWAGMoments | None = None
        self._device = torch.device("cpu")

    def setup(
        self, posterior: GaussianPosterior, prior: LowRankGaussian | None, cfg: Config, n: int
    ) -> None:
        self._device = posterior.device  # where restored moments go (as collected ones)

    def swag_options(self, cfg: Config) -> SWAGOptions:
        """The snapshots and schedule of ``cfg.method.swag``."""
        return cfg.method.swag

    def rank(self, cfg: Config) -> int:
        return self.swag_options(cfg).rank

    def lr_floor(self, cfg: Config) -> float:
        return self.swag_options(cfg).lr_ratio

    def schedule_of(self, cfg: Config) -> SWAGSchedule:
        """The collection epochs: from ``start`` (0: half the budget) on."""
        options = self.swag_options(cfg)
        return SWAGSchedule(options.start, options.every, cfg.optim.epochs)

    def on_epoch_end(self, posterior: GaussianPosterior, epoch: int, cfg: Config) -> None:
        if self.schedule_of(cfg).collects(epoch):
            if self.moments is None:
                self.moments = SWAGMoments(
                    posterior.dim, posterior.rank, posterior.mean.dtype, posterior.mean.device
                )
            self.moments.collect(posterior.mean)

    def state_dict(self) -> dict[str, Any]:
        return {"moments": None if self.moments is None else self.moments.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["moments"] is None:
            self.moments = None
            return
        mean = state["moments"]["mean"]
        self.moments = SWAGMoments(
            mean.numel(), int(state["moments"]["rank"]), mean.dtype, self._device
        )
        self.moments.load_state_dict(state["moments"])

    @torch.no_grad()
    def finish(self, posterior: GaussianPosterior, cfg: Config) -> None:
        if self.moments is None:
            raise ValueError(
                f"method.{self.name}.start={self.schedule_of(cfg).first} is after the last epoch "
                f"({cfg.optim.epochs}): SWAG collected no snapshot; lower method.{self.name}.start "
                "(0: half the budget)"
            )
        q = self.moments.to_gaussian(cfg.prior.var_floor)
        posterior.mean.copy_(q.mean)
        posterior.log_std.copy_(0.5 * torch.log(q.var))
        posterior.factor.zero_()
        posterior.factor[:, : q.rank] = q.factor


class SWAGMethod(SWAGCollection, SGDMethod):
    name = "swag"
    summary = "SWAG: Gaussian (diag + rank K) from the moments of SGD iterates"
    knob = "method.swag.lr_ratio"
    knob_grid = (0.25, 0.5, 1.0)
    sections = section_types(swag=SWAGOptions)


class FSWAGMethod(SWAGCollection, SAMMethod):
    name = "fswag"
    summary = "F-SWAG: SWAG collected along SAM iterates (flat-basin SWAG)"
    knob = "method.fswag.rho"
    knob_grid = (0.01, 0.05, 0.2)
    sections = section_types(fswag=FSWAGOptions)

    def swag_options(self, cfg: Config) -> FSWAGOptions:
        return cfg.method.fswag

    def sam_options(self, cfg: Config) -> FSWAGOptions:
        return cfg.method.fswag
