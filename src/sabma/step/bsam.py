"""bSAM (Möllenhoff & Khan, 2023, "SAM as an Optimal Relaxation of Bayes", Algorithm 1).

A mean-field Gaussian q = N(μ, diag(1/(N·s))) learnt with an Adam-like natural-gradient step whose
gradient is SAM's, taken at an adversarial point scaled by the precision s:

    ε  ~ N(0, 1/(N·s))                              noise (for the variance update)
    g  = ∇L̂(μ + ε)                                  noisy gradient
    μ' = μ + ρ·g / s                                 adversarial point (no normalisation)
    g_ε = ∇L̂(μ')
    m  ← β₁ m + (1 − β₁)(g_ε + δ ⊙ (μ − μ₀))
    s  ← β₂ s + (1 − β₂)(√s ⊙ |g| + δ + γ)
    μ  ← μ − α m / s

L̂ is the mean minibatch loss, N the number of training examples, δ the prior precision divided by
N (``delta``; a float, or per coordinate with :meth:`BSAM.set_prior`), μ₀ the prior mean (0 unless
set), γ a damping constant. Implemented from the paper, not from a third-party port: the noise
*standard deviation* is √(1/(N·s)); the mean is restored before each of the two updates; the
momentum averages g_ε + δ·μ (not g·δ); s is updated with √s·|g| (not squared).

It is a :class:`~sabma.step.two_step.TwoStepOptimizer` whose first pass is at a noisy point:
the shared machinery backs up, perturbs, restores and steps the update (``_BayesUpdate``), so
``state_dict``, the closure API and ``abandon_step`` behave as SAM's and SA-BMA's.

Call pattern (or ``step(closure)``, where the closure runs forward and backward)::

    opt.sample_noise(); loss(model(x)).backward()          # at μ + ε
    opt.first_step(zero_grad=True); loss(model(x)).backward()  # at μ + ρ g/s
    opt.second_step()
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from sabma.step.two_step import TwoStepOptimizer
from sabma.variance.rules import natural_variance


class BSAM(TwoStepOptimizer):
    """The bSAM optimiser (see the module docstring for the update).

    Args:
        params: parameters (or parameter-group dicts) of the mean μ.
        lr: α.
        n_data: N, the number of training examples (it sets the noise scale).
        rho: ρ of the adversarial step.
        delta: prior precision / N (L2 toward the prior mean).
        betas: (β₁, β₂).
        gamma: damping γ of the precision update.
        s_init: initial precision s (default δ + γ, the fixed point when gradients vanish).
        model: if given, its normalization running statistics are restored after the second
            pass, so only the first (noisy) pass updates them, as in SAM.
    """

    first_pass_at_theta = False  # the first pass is at the noisy point μ + ε

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        n_data: int,
        rho: float = 0.05,
        delta: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        gamma: float = 0.1,
        s_init: float | None = None,
        *,
        model: nn.Module | None = None,
    ) -> None:
        _check("lr", lr, positive=True)
        _check("rho", rho)
        _check("delta", delta)
        _check("gamma", gamma)
        if not (isinstance(n_data, int) and n_data >= 1):
            raise ValueError(f"n_data must be an integer >= 1, got {n_data!r}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must lie in [0, 1), got {betas!r}")
        if s_init is not None:
            _check("s_init", s_init, positive=True)
        listed = list(params)
        groups = listed if listed and isinstance(listed[0], dict) else [{"params": listed}]
        settings = {
            "lr": lr,
            "delta": delta,
            "betas": betas,
            "gamma": gamma,
            "s_init": s_init,
            "n_data": n_data,
        }
        super().__init__(groups, _BayesUpdate, rho, settings, stats_model=model)
        self._noise_backup: list[tuple[Tensor, Tensor]] = []

    def _params(self) -> list[tuple[dict[str, Any], Tensor]]:
        return [(g, p) for g in self.param_groups for p in g["params"]]

    @torch.no_grad()
    def set_prior(self, param: Tensor, mean: Tensor | float, precision: Tensor | float) -> None:
        """A per-coordinate prior N(mean, 1/(N·δ)) for ``param``: δ = ``precision`` / N is
        the prior precision per example. Resets s to its initial value."""
        group = next((g for g, p in self._params() if p is param), None)
        if group is None:
            raise ValueError("set_prior: the tensor is not one of this optimiser's parameters")
        precision_t = torch.as_tensor(precision, dtype=param.dtype, device=param.device)
        if bool((precision_t < 0).any()) or not bool(torch.isfinite(precision_t).all()):
            raise ValueError("set_prior: the precision must be finite and >= 0")
        self.state[param].clear()
        state = bsam_state(self.state, group, param)
        state["delta"] = (precision_t / group["n_data"]).expand_as(param).clone()
        state["prior_mean"] = torch.as_tensor(mean).to(param).expand_as(param).clone()
        state["s"] = _initial_s(group, state["delta"])

    def variance(self, param: Tensor) -> Tensor:
        """σ² = 1/(N·s) of the Gaussian over ``param``: the natural-gradient variance rule of
        :mod:`sabma.variance` with λ = N, T = 1 and s = h + δ (bSAM's s already holds δ + γ)."""
        group = next(g for g, p in self._params() if p is param)
        return natural_variance(bsam_state(self.state, group, param)["s"], group["n_data"], 0.0)

    # --- the step: noise, then the two-step machinery of TwoStepOptimizer ------------------
    @torch.no_grad()
    def sample_noise(self, generator: torch.Generator | None = None) -> None:
        """Move μ to μ + ε with ε ~ N(0, 1/(N·s)), for the first (noisy) gradient."""
        if self._noise_backup or self._perturbed:
            raise RuntimeError("sample_noise called while a step is in progress")
        for _, p in self._params():
            std = self.variance(p).sqrt()
            noise = torch.randn(p.shape, generator=generator, dtype=p.dtype, device=p.device)
            self._noise_backup.append((p, p.detach().clone()))
            p.add_(noise * std)

    def _before_first_pass(self) -> None:
        self.sample_noise()

    def _undo_noise(self) -> None:
        for p, value in self._noise_backup:
            p.copy_(value)
        self._noise_backup = []

    @torch.no_grad()
    def perturbation(self) -> list[tuple[Tensor, Tensor]]:
        """μ back from the noisy point; ε = ρ·g/s with g the noisy gradient (kept for s)."""
        if not self._noise_backup:
            raise RuntimeError("first_step needs sample_noise() and a backward pass first")
        self._undo_noise()
        eps = []
        for group, p in self._params():
            if p.grad is None:
                continue
            state = bsam_state(self.state, group, p)
            state["noisy_grad"] = p.grad.detach().clone()
            eps.append((p, group["rho"] * p.grad / state["s"]))
        return eps

    @torch.no_grad()
    def abandon_step(self) -> None:
        """Give up the step in progress (a pass failed): μ and statistics restored."""
        self._undo_noise()
        super().abandon_step()
        for _, p in self._params():
            self.state[p].pop("noisy_grad", None)


class _BayesUpdate(torch.optim.Optimizer):
    """bSAM's update, BSAM's base optimiser (it shares BSAM's groups and state): the momentum
    from g_ε, the precision from the noisy g, then μ."""

    def __init__(self, params: Any, **settings: Any) -> None:
        super().__init__(params, settings)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                state = bsam_state(self.state, group, p)
                if p.grad is None or "noisy_grad" not in state:
                    continue
                beta1, beta2 = group["betas"]
                delta, s = state["delta"], state["s"]
                adv_grad = p.grad + delta * (p - state["prior_mean"])
                state["momentum"].mul_(beta1).add_(adv_grad, alpha=1 - beta1)
                curvature = s.sqrt() * state.pop("noisy_grad").abs() + delta + group["gamma"]
                s.mul_(beta2).add_(curvature, alpha=1 - beta2)
                p.addcdiv_(state["momentum"], s, value=-group["lr"])


def bsam_state(states: Any, group: dict[str, Any], p: Tensor) -> dict[str, Any]:
    """The per-parameter state of bSAM (δ, μ₀, s, momentum), created on first use."""
    state: dict[str, Any] = states[p]
    if not state:
        delta = torch.as_tensor(group["delta"], dtype=p.dtype, device=p.device)
        state["delta"] = delta.expand_as(p).clone()
        state["prior_mean"] = torch.zeros_like(p)
        state["s"] = _initial_s(group, state["delta"])
        state["momentum"] = torch.zeros_like(p)
    return state


def _initial_s(group: dict[str, Any], delta: Tensor) -> Tensor:
    s0 = group["s_init"]
    return delta + group["gamma"] if s0 is None else torch.full_like(delta, s0)


def _check(name: str, value: float, positive: bool = False) -> None:
    ok = isinstance(value, int | float) and math.isfinite(value)
    ok = ok and (value > 0 if positive else value >= 0)
    if not ok:
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
