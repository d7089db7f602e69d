"""The settings of the SA-BMA step: the configuration's ``method.sabma`` section and the
defaults of :class:`sabma.step.sabma.SABMA` (one set of defaults for the library and the CLI),
their checks, and the optimiser's parameter groups (one per block of θ)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sabma.posterior.gaussian import GaussianPosterior
from sabma.step.fisher import BLOCKS
from sabma.step.kl_ball import Metric


@dataclass
class SABMAOptions:
    rank: int = 5  # K of the posterior's low-rank factor
    rho: float = 1.0  # KL radius: KL(q_θ+ε ‖ q_θ) ≤ ρ²/2; ρ = 1 moves μ by about one σ
    metric: str = "fisher"  # fisher | euclidean: the norm of the perturbation ball
    perturb: list[str] = field(default_factory=lambda: ["mean", "log_std"])
    perturb_every: int = 1  # ε formed every k steps, reused in between


def checked_metric(metric: str | Metric) -> Metric:
    try:
        return Metric(metric)
    except ValueError:
        raise ValueError(
            f"metric must be one of {[m.value for m in Metric]}, got {metric!r}"
        ) from None


def checked_perturb(perturb: str | Iterable[str]) -> tuple[str, ...]:
    blocks = (perturb,) if isinstance(perturb, str) else tuple(perturb)
    if not blocks or any(b not in BLOCKS for b in blocks):
        raise ValueError(f"perturb must be a non-empty subset of {BLOCKS}, got {blocks!r}")
    return blocks


def parameter_groups(
    posterior: GaussianPosterior,
    decay_covariance: bool,
    block_lr_scale: Mapping[str, float] | None,
    base_kwargs: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """One group per block (``mean``, ``log_std``, ``factor`` when K > 0): σ and D without weight
    decay unless ``decay_covariance``, and a block's lr scaled by ``block_lr_scale``."""
    groups: list[dict[str, Any]] = [
        {"params": [posterior.mean], "block": "mean"},
        {"params": [posterior.log_std], "block": "log_std"},
    ]
    if posterior.rank:
        groups.append({"params": [posterior.factor], "block": "factor"})
    if not decay_covariance:
        for group in groups[1:]:
            group["weight_decay"] = 0.0
    for block, scale in (block_lr_scale or {}).items():
        if block not in BLOCKS or not scale >= 0:
            raise ValueError(
                f"block_lr_scale takes blocks of {BLOCKS} and scales >= 0, got {block!r}: {scale!r}"
            )
        if "lr" not in base_kwargs:
            raise ValueError("block_lr_scale needs an explicit lr")
        for group in groups:
            if group["block"] == block:
                group["lr"] = base_kwargs["lr"] * scale
    return groups
