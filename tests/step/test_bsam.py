"""bSAM against Algorithm 1 of Möllenhoff & Khan (2023), written out by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sabma.step.bsam import BSAM


def quadratic(w: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L(w) = ½ Σ aᵢwᵢ² + b·w, gradient a ⊙ w + b (known in closed form)."""
    return 0.5 * (a * w * w).sum() + (b * w).sum()


def test_noise_has_variance_one_over_n_s() -> None:
    w = nn.Parameter(torch.zeros(20000))
    opt = BSAM([w], lr=0.1, n_data=50, delta=0.3, gamma=0.2)  # s₀ = δ + γ = 0.5
    opt.sample_noise()
    assert float(w.detach().std()) == pytest.approx(math.sqrt(1 / (50 * 0.5)), rel=0.02)
    assert abs(float(w.detach().mean())) < 0.01
    torch.testing.assert_close(opt.variance(w), torch.full((20000,), 1 / 25))


def test_one_step_matches_algorithm_1_by_hand() -> None:
    """Two steps on a quadratic with a per-coordinate prior: noise from a fixed generator, the
    mean restored before the ascent and before the update, m with g_ε + δ(μ − μ₀), s with √s|g|."""
    torch.manual_seed(0)
    d, n, lr, rho, gamma, (b1, b2) = 6, 40, 0.05, 0.3, 0.1, (0.8, 0.9)
    a, b = torch.rand(d) + 0.5, torch.randn(d)
    mu0, precision = torch.randn(d), torch.rand(d) * 10
    w = nn.Parameter(torch.randn(d))
    opt = BSAM([w], lr=lr, n_data=n, rho=rho, betas=(b1, b2), gamma=gamma)
    opt.set_prior(w, mu0, precision)

    mu, delta = w.detach().clone(), precision / n
    s, m = delta + gamma, torch.zeros(d)
    for step in range(2):
        gen = torch.Generator().manual_seed(step)
        eps = torch.randn(d, generator=torch.Generator().manual_seed(step)) / (n * s).sqrt()
        g = a * (mu + eps) + b
        g_adv = a * (mu + rho * g / s) + b
        m = b1 * m + (1 - b1) * (g_adv + delta * (mu - mu0))
        s = b2 * s + (1 - b2) * (s.sqrt() * g.abs() + delta + gamma)
        mu = mu - lr * m / s

        opt.zero_grad()
        opt.sample_noise(gen)
        quadratic(w, a, b).backward()
        opt.first_step(zero_grad=True)
        quadratic(w, a, b).backward()
        opt.second_step()
        torch.testing.assert_close(w.detach(), mu)
        torch.testing.assert_close(opt.variance(w), 1 / (n * s))


def test_closure_step_equals_the_explicit_calls_and_keeps_the_first_pass_statistics() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    twin = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    twin.load_state_dict(model.state_dict())
    loss = nn.CrossEntropyLoss()

    def closure() -> torch.Tensor:
        value = loss(model(x), y)
        value.backward()
        return value

    opt = BSAM(model.parameters(), lr=0.1, n_data=16, model=model)
    torch.manual_seed(5)
    opt.step(closure)
    twin_opt = BSAM(twin.parameters(), lr=0.1, n_data=16, model=twin)
    torch.manual_seed(5)
    twin_opt.zero_grad()
    twin_opt.sample_noise()
    loss(twin(x), y).backward()
    stats_after_noisy = twin[1].running_mean.clone()
    twin_opt.first_step(zero_grad=True)
    loss(twin(x), y).backward()
    twin_opt.second_step()
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    # the statistics are those of the first (noisy) pass, as in SAM: the second pass's are undone
    assert not torch.equal(stats_after_noisy, torch.zeros(4))
    torch.testing.assert_close(twin[1].running_mean, stats_after_noisy)
    torch.testing.assert_close(model[1].running_mean, stats_after_noisy)


def test_bad_arguments_and_call_order_are_clear_errors() -> None:
    w = nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="n_data must be an integer >= 1"):
        BSAM([w], lr=0.1, n_data=0)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        BSAM([w], lr=0.0, n_data=5)
    with pytest.raises(ValueError, match=r"betas must lie in \[0, 1\)"):
        BSAM([w], lr=0.1, n_data=5, betas=(0.9, 1.0))
    opt = BSAM([w], lr=0.1, n_data=5)
    with pytest.raises(RuntimeError, match="first_step needs sample_noise"):
        opt.first_step()
    with pytest.raises(ValueError, match="not one of this optimiser's parameters"):
        opt.set_prior(torch.zeros(3), 0.0, 1.0)
