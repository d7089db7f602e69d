"""Deep ensembles (Lakshminarayanan et al., 2017) of the subset: M independent SGD runs.

Member m starts from the same pre-trained subset with its own random head (a draw from
N(0, init.head_std² · I)) and its own data order, and gets the full loop and model
selection. The predictive averages the M members' probabilities; the "posterior mean" predictor
reported beside it is member 0 alone.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sabma.config import Config
from sabma.methods.base import section_types
from sabma.methods.point import SGDMethod
from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian


@dataclass
class EnsembleOptions:
    size: int = 5  # number of members M


class EnsembleMethod(SGDMethod):
    name = "ensemble"

    @classmethod
    def bounds(cls, cfg: Config) -> list[tuple[str, float, float, bool]]:
        m = cfg.method
        return [
            *super().bounds(cfg),
            ("method.ensemble.size", m.ensemble.size, 1, False),
        ]

    summary = "deep ensemble: method.ensemble.size independent SGD runs, random heads"
    sections = section_types(ensemble=EnsembleOptions)
    point = False

    def __init__(self) -> None:
        self._start: dict[str, Tensor] | None = None
        self._head: Tensor | None = None
        self._members: list[Tensor] = []

    def members(self, cfg: Config) -> int:
        size = cfg.method.ensemble.size
        if size < 1:
            raise ValueError(f"method.ensemble.size must be >= 1, got {size}")
        return size

    def initialise(
        self, posterior: GaussianPosterior, start: LowRankGaussian, is_head: Tensor, cfg: Config
    ) -> None:
        super().initialise(posterior, start, is_head, cfg)
        self._head = is_head

    @torch.no_grad()
    def start_member(self, posterior: GaussianPosterior, member: int, cfg: Config) -> None:
        if self._start is None:
            self._start = copy.deepcopy(posterior.state_dict())
        posterior.load_state_dict(self._start)
        if self._head is not None:
            gen = torch.Generator().manual_seed(cfg.seed * 1000 + member)
            noise = torch.randn(posterior.dim, generator=gen).to(posterior.mean)
            head_draw = noise * cfg.init.head_std
            posterior.mean.copy_(torch.where(self._head, head_draw, posterior.mean))

    def state_dict(self) -> dict[str, Any]:
        return {"members": list(self._members), "start": self._start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._members = list(state["members"])
        self._start = state["start"]

    def end_member(self, posterior: GaussianPosterior, member: int, cfg: Config) -> None:
        self._members.append(posterior.mean.detach().clone())

    @torch.no_grad()
    def finish(self, posterior: GaussianPosterior, cfg: Config) -> None:
        posterior.mean.copy_(self._members[0])

    def samples(self) -> Tensor | None:
        return torch.stack(self._members) if self._members else None
