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

from sabma.running_stats import running_stat_buffers
from sabma.variance.rules import natural_variance


class BSAM(torch.optim.Optimizer):
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
        model: if given, its normalization running statistics are restored after each step, so
            only the first (noisy) pass updates them, as in SAM.
    """

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
        defaults = {
            "lr": lr,
            "rho": rho,
            "delta": delta,
            "betas": betas,
            "gamma": gamma,
            "s_init": s_init,
            "n_data": n_data,
        }
        super().__init__(params, defaults)
        self._stat_buffers = list(running_stat_buffers(model).values()) if model is not None else []
        self._saved_stats: list[Tensor] = []
        self._backup: list[tuple[Tensor, Tensor]] = []
        self._phase = "idle"  # idle → noisy → perturbed → idle

    # --- state ------------------------------------------------------------------------------
    def _params(self) -> list[tuple[dict[str, Any], Tensor]]:
        return [(g, p) for g in self.param_groups for p in g["params"]]

    def _state(self, group: dict[str, Any], p: Tensor) -> dict[str, Any]:
        state = self.state[p]
        if not state:
            delta = torch.as_tensor(group["delta"], dtype=p.dtype, device=p.device)
            state["delta"] = delta.expand_as(p).clone()
            state["prior_mean"] = torch.zeros_like(p)
            state["s"] = self._initial_s(group, state["delta"])
            state["momentum"] = torch.zeros_like(p)
        return state

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
        state = self._state(group, param)
        state["delta"] = (precision_t / group["n_data"]).expand_as(param).clone()
        state["prior_mean"] = torch.as_tensor(mean).to(param).expand_as(param).clone()
        state["s"] = self._initial_s(group, state["delta"])

    @staticmethod
    def _initial_s(group: dict[str, Any], delta: Tensor) -> Tensor:
        s0 = group["s_init"]
        return delta + group["gamma"] if s0 is None else torch.full_like(delta, s0)

    def variance(self, param: Tensor) -> Tensor:
        """σ² = 1/(N·s) of the Gaussian over ``param``: the natural-gradient variance rule of
        :mod:`sabma.variance` with λ = N, T = 1 and s = h + δ (bSAM's s already holds δ + γ)."""
        group = next(g for g, p in self._params() if p is param)
        return natural_variance(self._state(group, param)["s"], group["n_data"], 0.0)

    # --- the step ---------------------------------------------------------------------------
    @torch.no_grad()
    def sample_noise(self, generator: torch.Generator | None = None) -> None:
        """Move μ to μ + ε with ε ~ N(0, 1/(N·s)), for the first (noisy) gradient."""
        if self._phase != "idle":
            raise RuntimeError(f"sample_noise called in phase {self._phase!r}")
        self._saved_stats = [b.detach().clone() for b in self._stat_buffers]
        for _, p in self._params():
            std = self.variance(p).sqrt()
            noise = torch.randn(p.shape, generator=generator, dtype=p.dtype, device=p.device)
            self._backup.append((p, p.detach().clone()))
            p.add_(noise * std)
        self._phase = "noisy"

    @torch.no_grad()
    def abandon_step(self) -> None:
        """Give up the step in progress (a pass failed): μ and statistics restored."""
        self._restore()
        for buffer, value in zip(self._stat_buffers, self._saved_stats, strict=False):
            buffer.copy_(value)
        self._saved_stats = []
        for _, p in self._params():
            self.state[p].pop("noisy_grad", None)
        self._phase = "idle"

    def _restore(self) -> None:
        for p, value in self._backup:
            p.copy_(value)
        self._backup = []

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Restore μ and move to the adversarial point μ + ρ·g/s (g: the noisy gradient)."""
        if self._phase != "noisy":
            raise RuntimeError("first_step needs sample_noise() and a backward pass first")
        self._restore()
        for group, p in self._params():
            if p.grad is None:
                continue
            state = self._state(group, p)
            state["noisy_grad"] = p.grad.detach().clone()
            self._backup.append((p, p.detach().clone()))
            p.add_(group["rho"] * p.grad / state["s"])
        self._phase = "perturbed"
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore μ; update the momentum with g_ε, the precision with g, then μ."""
        if self._phase != "perturbed":
            raise RuntimeError("second_step called without first_step")
        self._restore()
        for buffer, value in zip(self._stat_buffers, self._saved_stats, strict=True):
            buffer.copy_(value)
        self._saved_stats = []
        for group, p in self._params():
            state = self._state(group, p)
            if p.grad is None or "noisy_grad" not in state:
                continue
            beta1, beta2 = group["betas"]
            delta, s = state["delta"], state["s"]
            adv_grad = p.grad + delta * (p - state["prior_mean"])
            state["momentum"].mul_(beta1).add_(adv_grad, alpha=1 - beta1)
            curvature = s.sqrt() * state.pop("noisy_grad").abs() + delta + group["gamma"]
            s.mul_(beta2).add_(curvature, alpha=1 - beta2)
            p.addcdiv_(state["momentum"], s, value=-group["lr"])
        self._phase = "idle"
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:  # type: ignore[override]
        """One full step; ``closure`` runs forward and backward (without zeroing gradients) and
        returns the loss. It is called twice; the returned loss is the noisy one."""
        if closure is None:
            raise ValueError("BSAM.step needs a closure that runs forward and backward")
        closure = torch.enable_grad()(closure)
        self.zero_grad()
        self.sample_noise()
        loss = closure()
        self.first_step(zero_grad=True)
        closure()
        self.second_step()
        return loss


def _check(name: str, value: float, positive: bool = False) -> None:
    ok = isinstance(value, int | float) and math.isfinite(value)
    ok = ok and (value > 0 if positive else value >= 0)
    if not ok:
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
