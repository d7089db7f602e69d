"""IVON (Shen et al., 2024, "Variational Learning is Effective for Large Deep Networks").

The reference implementation, the ``ivon-opt`` package, used as published over the Bayesian
subset's mean: every step draws w ~ N(μ, 1/(λ(h + δ))) (``sampled_params``), takes the gradient
there, updates h by the reparameterisation estimate with IVON's positivity-preserving average,
and μ by the Adam-like step (m/(1 − β₁ᵗ) + δμ)/(h + δ). λ = ``method.ivon.ess`` (0: N/T, the
number of training examples over ``method.ivon.temperature``, by default SA-BMA's T, so that IVON
targets the same tempered posterior; at T = 1 it is IVON's own choice, N),
h₀ = ``method.ivon.hess_init``, β₁ = ``optim.momentum``, β₂ = ``method.ivon.beta2``,
δ = ``method.ivon.weight_decay`` (the package's own prior: N(0, 1/(λδ)),
centred at 0 — the package has no other). Its learning rate is ``optim.lr``/(1 − β₁) on the
shared schedule: IVON's momentum is an average, not heavy-ball's sum, so this makes its step
(at h = h₀) that of heavy-ball SGD at ``optim.lr`` — one learning-rate grid serves every method,
and the value is chosen on validation like every method's.

It is SA-BMA's variance rule (:mod:`sabma.variance`) in its original form — one-sample curvature
estimate, preconditioned mean step, no sharpness-aware ascent, no low-rank factor — so the
comparison of the two measures what the ascent, the Fisher curvature and the factor add.
The predictive is BMA over N(μ, diag(1/(λ(h + δ)))): ``log_std`` follows h after every step.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch

from sabma.config import Config
from sabma.methods.base import Method, section_types
from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian


def _ivon() -> Any:
    try:
        import ivon
    except ImportError:
        raise ValueError(
            "method 'ivon' needs the package ivon-opt (pip install 'sabma[baselines]')"
        ) from None
    return ivon


@dataclass
class IVONOptions:
    ess: float = 0.0  # λ (0: N/temperature, the tempered posterior SA-BMA targets)
    temperature: float = 0.001  # T of λ = N/T when ess is 0
    hess_init: float = 1.0  # h₀, the initial curvature (σ₀ = 1/√(λ(h₀ + δ)))
    beta2: float = 0.99999  # the curvature average's memory (the package's default)
    weight_decay: float = 1e-4  # δ, the package's prior precision per example


class IVONMethod(Method):
    name = "ivon"
    less_noise = "a lower method.ivon.temperature"

    @classmethod
    def bounds(cls, cfg: Config) -> list[tuple[str, float, float, bool]]:
        m = cfg.method
        return [
            *super().bounds(cfg),
            ("method.ivon.temperature", m.ivon.temperature, 0, True),
        ]

    summary = "IVON: the ivon-opt package as published (natural-gradient VI, Adam-like mean step)"
    knob = "method.ivon.temperature"
    knob_grid = (1e-4, 1e-3, 1e-2)
    sections = section_types(ivon=IVONOptions)
    point = False

    @staticmethod
    def knob_unused(cfg: Config) -> str:
        if cfg.method.ivon.ess > 0:
            return (
                "method.ivon.temperature sets λ = N/T only when method.ivon.ess is 0 "
                f"(got ess={cfg.method.ivon.ess:g})"
            )
        return ""

    def supports_loss_scaling(self, cfg: Config) -> bool:
        return False  # its own update (see Method.step_scaled)

    def optimizer(
        self, posterior: GaussianPosterior, prior: LowRankGaussian | None, cfg: Config, n: int
    ) -> torch.optim.Optimizer:
        o, m = cfg.optim, cfg.method.ivon
        optimizer = _ivon().IVON(
            [posterior.mean],
            lr=o.lr / (1.0 - o.momentum),
            ess=m.ess or float(n) / m.temperature,
            hess_init=m.hess_init,
            beta1=o.momentum,
            beta2=m.beta2,
            weight_decay=m.weight_decay,
        )
        self._sync_std(posterior, optimizer)
        self._optimizer = optimizer
        return optimizer

    @staticmethod
    @torch.no_grad()
    def _sync_std(posterior: GaussianPosterior, optimizer: torch.optim.Optimizer) -> None:
        group = optimizer.param_groups[0]
        precision = group["ess"] * (group["hess"] + group["weight_decay"])
        posterior.log_std.copy_(-0.5 * precision.log())

    def pass_context(self, optimizer: torch.optim.Optimizer) -> AbstractContextManager[Any]:
        """Each pass runs at w ~ q, drawn by the package (its curvature estimate needs it)."""
        return optimizer.sampled_params(train=True)  # type: ignore[attr-defined,no-any-return]

    def after_update(self, posterior: GaussianPosterior, optimizer: torch.optim.Optimizer) -> None:
        self._sync_std(posterior, optimizer)

    def state_dict(self) -> dict[str, Any]:
        """IVON's step count (its bias correction) lives outside its ``state_dict``."""
        optimizer = getattr(self, "_optimizer", None)
        return {"current_step": 0 if optimizer is None else optimizer.current_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._optimizer.current_step = int(state["current_step"])
