"""Lazy perturbation (perturb_every = k) and SA-BMA's first pass without D's gradient."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn
from torch.nn.functional import cross_entropy

from sabma import SABMA, SAM, GaussianPosterior, LowRankGaussian
from tests.conftest import TinyResNet, mlp


def test_sam_reuses_the_last_epsilon_between_fresh_steps() -> None:
    """On L(w) = ½ wᵀAw with plain SGD: fresh steps use ε = ρ g/‖g‖ from the gradient at w; lazy
    steps take one gradient, at w + ε_last, with ε_last the *vector* of the last fresh step."""
    torch.manual_seed(0)
    a = torch.diag(torch.tensor([1.0, 3.0, 10.0], dtype=torch.float64))
    w = nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    lr, rho = 0.05, 0.2
    opt = SAM([w], lr=lr, rho=rho, perturb_every=3)
    calls: list[int] = []

    def closure() -> Tensor:
        calls.append(1)
        loss = 0.5 * w @ a @ w
        loss.backward()
        return loss

    expected = w.detach().clone()
    eps = torch.zeros(3, dtype=torch.float64)
    per_step = []
    for step in range(7):
        before = len(calls)
        opt.zero_grad()
        opt.step(closure)
        per_step.append(len(calls) - before)
        if step % 3 == 0:
            g = a @ expected
            eps = rho * g / g.norm()
        expected = expected - lr * (a @ (expected + eps))
        torch.testing.assert_close(w.detach(), expected, atol=1e-12, rtol=0)
    assert per_step == [2, 1, 1, 2, 1, 1, 2]


def test_the_manual_api_always_forms_a_fresh_epsilon_and_bad_values_are_refused() -> None:
    model = mlp().double()
    twin = copy.deepcopy(model)
    x, y = torch.randn(16, 2, dtype=torch.float64), torch.randint(0, 3, (16,))
    lazy = SAM(model.parameters(), lr=0.1, rho=0.05, perturb_every=4)
    exact = SAM(twin.parameters(), lr=0.1, rho=0.05)
    for _ in range(3):
        for m, opt in ((model, lazy), (twin, exact)):
            opt.zero_grad()
            cross_entropy(m(x), y).backward()
            opt.first_step(zero_grad=True)
            cross_entropy(m(x), y).backward()
            opt.second_step()
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-12, rtol=0)
    assert lazy.reuse_due  # step() would now reuse ε; first_step() never does
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="perturb_every"):
            SAM(model.parameters(), perturb_every=bad)  # type: ignore[arg-type]


def test_lazy_sabma_step_updates_running_stats_once_and_keeps_the_prior_term() -> None:
    torch.manual_seed(1)
    model = TinyResNet().train()
    posterior = GaussianPosterior(model, "norm+head", rank=2, init_std=0.01)
    mean = posterior.mean.detach()
    prior = LowRankGaussian(mean + 0.1, torch.ones_like(mean), mean.new_zeros(posterior.dim, 1))
    opt = SABMA(
        posterior,
        variance="gradient",
        lr=0.05,
        rho=0.5,
        perturb_every=2,
        prior=prior,
        kl_weight=0.1,
    )
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    tracked = next(b for n, b in model.named_buffers() if n.endswith("num_batches_tracked"))
    seen: list[tuple[bool, bool]] = []

    def closure() -> Tensor:
        seen.append((posterior.update_running_stats, posterior.factor_grad))
        loss = cross_entropy(posterior(x), y)
        loss.backward()
        return loss

    for _ in range(4):
        opt.zero_grad()
        opt.step(closure)
    # fresh, lazy, fresh, lazy: the lazy pass updates statistics and trains D
    assert seen == [
        (True, False),
        (False, True),
        (True, True),
        (True, False),
        (False, True),
        (True, True),
    ]
    assert int(tracked) == 4
    # the lazy step's update includes the KL gradient: with a zero data gradient it is all
    # that moves the mean
    opt.zero_grad()

    def no_data() -> Tensor:
        loss = 0.0 * posterior(x).sum()
        loss.backward()
        return loss

    assert opt.reuse_due is False
    opt.step(no_data)  # fresh (ε from a zero gradient: none)
    assert opt.reuse_due
    mean_before = posterior.mean.detach().clone()
    opt.zero_grad()
    opt.step(no_data)
    assert not torch.equal(posterior.mean.detach(), mean_before)


def test_sabma_first_pass_skips_the_factor_gradient_without_changing_the_step() -> None:
    torch.manual_seed(2)
    base = mlp().double()
    x, y = torch.randn(16, 2, dtype=torch.float64), torch.randint(0, 3, (16,))
    posteriors, opts = [], []
    factor = 0.05 * torch.randn(67, 3, dtype=torch.float64)
    for skip in (True, False):
        posterior = GaussianPosterior(copy.deepcopy(base), "all", rank=3, init_std=0.05)
        with torch.no_grad():
            posterior.factor.copy_(factor)
        opt = SABMA(
            posterior,
            variance="gradient",
            lr=0.05,
            momentum=0.9,
            rho=0.3,
            block_lr_scale={"factor": 1.0},
        )
        opt._skip_factor_in_first_pass = skip
        opt._first_pass_mode()
        posteriors.append(posterior)
        opts.append(opt)
    factor_grads: list[bool] = []
    for step in range(3):
        for posterior, opt in zip(posteriors, opts, strict=True):
            torch.manual_seed(step)
            posterior.resample()
            opt.zero_grad()
            cross_entropy(posterior(x), y).backward()
            factor_grads.append(posterior.factor.grad is not None)
            opt.first_step(zero_grad=True)
            cross_entropy(posterior(x), y).backward()
            opt.second_step()
    assert factor_grads == [False, True] * 3
    for a, b in zip(posteriors[0].parameters(), posteriors[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    assert posteriors[0].factor.detach().abs().sum() > 0
