"""SWAG moments (Maddox et al., 2019) and their conversion to a :class:`LowRankGaussian`.

SWAG keeps the running mean w̄ and second moment of weight snapshots, and the deviations
w_i − w̄_i of the last K snapshots as columns of D̂. Its covariance convention is

    Σ_swag = ½ diag(v) + D̂ D̂ᵀ / (2 (K − 1)),   v = E[w²] − w̄²,

so σ² = v / 2 and D = D̂ / √(2 (K − 1)) (no low-rank part when K ≤ 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sabma.posterior.lowrank import LowRankGaussian


def swag_to_gaussian(
    mean: Tensor, variance: Tensor, deviations: Tensor, var_floor: float = 1e-8
) -> LowRankGaussian:
    """Convert SWAG moments (mean (d,), diagonal variance v (d,), deviations D̂ (d, K)) to
    N(mean, diag(v/2) + D̂D̂ᵀ/(2(K−1))). Variances are clamped below at ``var_floor``."""
    if deviations.dim() != 2 or deviations.shape[0] != mean.shape[0]:
        raise ValueError(
            f"deviations must have shape (d, K) with d={mean.shape[0]}, "
            f"got {tuple(deviations.shape)}"
        )
    k = deviations.shape[1]
    var = (variance / 2).clamp_min(var_floor)
    factor = deviations / math.sqrt(2 * (k - 1)) if k > 1 else deviations[:, :0]
    return LowRankGaussian(mean, var, factor)


@dataclass(frozen=True)
class SWAGSchedule:
    """Which epochs SWAG snapshots: every ``every``-th from ``start`` on (``start`` 0: from half
    of ``epochs``). The one rule for the SWAG method and the SWAG prior."""

    start: int
    every: int
    epochs: int

    @property
    def first(self) -> int:
        return self.start or max(1, self.epochs // 2)

    def collects(self, epoch: int) -> bool:
        """Whether the end of (1-based) ``epoch`` is snapshotted."""
        return epoch >= self.first and (epoch - self.first) % self.every == 0

    def check(self, section: str) -> None:
        if self.epochs < 1 or self.every < 1 or not 0 <= self.start <= self.epochs:
            raise ValueError(
                f"{section}.swag_start must lie in [0, {self.epochs}] (0: half the budget) and "
                f"{section}.swag_every must be >= 1, got {self.start} and {self.every}"
            )


class SWAGMoments:
    """Accumulates flat weight snapshots; ``rank`` = K, the number of deviation columns kept."""

    def __init__(
        self,
        dim: int,
        rank: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        if rank < 0:
            raise ValueError(f"SWAG rank must be >= 0, got {rank}")
        self.rank = rank
        self.count = 0
        self.mean = torch.zeros(dim, dtype=dtype, device=device)
        self.sq_mean = torch.zeros(dim, dtype=dtype, device=device)
        self._deviations: list[Tensor] = []

    @torch.no_grad()
    def collect(self, w: Tensor) -> None:
        """Add one snapshot: update the running moments, then keep w − w̄ (w̄ including w)."""
        w = w.detach().to(self.mean)
        self.count += 1
        self.mean += (w - self.mean) / self.count
        self.sq_mean += (w * w - self.sq_mean) / self.count
        if self.rank:
            self._deviations.append(w - self.mean)
            self._deviations = self._deviations[-self.rank :]

    def state_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "count": self.count,
            "mean": self.mean,
            "sq_mean": self.sq_mean,
            "deviations": list(self._deviations),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = int(state["count"])
        self.mean = state["mean"].to(self.mean)
        self.sq_mean = state["sq_mean"].to(self.sq_mean)
        self._deviations = [t.to(self.mean) for t in state["deviations"]]

    @property
    def variance(self) -> Tensor:
        return (self.sq_mean - self.mean**2).clamp_min(0.0)

    @property
    def deviations(self) -> Tensor:
        """D̂, shape (d, number of kept columns ≤ K)."""
        if not self._deviations:
            return self.mean.new_zeros(self.mean.numel(), 0)
        return torch.stack(self._deviations, dim=1)

    def to_gaussian(self, var_floor: float = 1e-8) -> LowRankGaussian:
        if self.count == 0:
            raise ValueError("no SWAG snapshots were collected")
        return swag_to_gaussian(self.mean, self.variance, self.deviations, var_floor)
