"""What the SA-BMA step keeps between passes and steps (for speed) must never go stale: q_θ's
Woodbury pieces while σ and D are unchanged, D z₂ while D and z₂ are unchanged, and log σ's
gradient skipped where nobody reads it."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.functional import cross_entropy

import sabma.step.kept_geometry as kept_module
from sabma import SABMA, GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian
from sabma.step.kl_ball import ball_perturbation
from sabma.variance import NaturalVariance


def problem(rank: int = 3, curvature: str = "fisher", refresh_every: int = 4):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 3))
    x, y = torch.randn(32, 10), torch.randint(0, 3, (32,))
    posterior = GaussianPosterior(model, "all", rank=rank, init_std=0.01)
    mean = posterior.mean.detach().clone()
    prior = LowRankGaussian(mean, torch.ones_like(mean), mean.new_zeros(mean.numel(), 0))
    variance = NaturalVariance(
        ess=32,
        curvature=curvature,
        data=x if curvature == "fisher" else None,
        refresh_every=refresh_every,
    )
    opt = SABMA(posterior, prior=prior, variance=variance, lr=0.05, momentum=0.9)

    def step() -> None:
        opt.zero_grad()

        def closure() -> torch.Tensor:
            loss = cross_entropy(posterior(x), y)
            loss.backward()
            return loss

        opt.step(closure)

    return posterior, opt, step


def counting_geometry(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = kept_module.detached_gaussian

    def counted(posterior: GaussianPosterior) -> LowRankGaussian:
        calls.append(1)
        return original(posterior)

    monkeypatch.setattr(kept_module, "detached_gaussian", counted)
    return calls


def test_the_fisher_geometry_is_formed_once_per_refresh(monkeypatch) -> None:
    """Between refreshes σ and D do not change: q_θ's capacitance and diag Σ⁻¹ (O(dK²)) are
    formed once, not at every step; a refresh (σ and D set) forms them again."""
    calls = counting_geometry(monkeypatch)
    _, _, step = problem(refresh_every=4)
    for _ in range(9):  # refreshes after updates 1, 5 and 9
        step()
    # step 1 (before the first refresh), steps 2–5, steps 6–9
    assert len(calls) == 3


def test_the_kept_geometry_follows_sigma_and_factor(monkeypatch) -> None:
    """σ or D changed outside a step (in place, as a user or a scheduler might): the next ε is
    the one of the new posterior, never of the kept one."""
    posterior, opt, step = problem(refresh_every=1000)
    for _ in range(3):
        step()
    with torch.no_grad():
        posterior.log_std.add_(0.7)
        posterior.factor.mul_(3.0)
    seen: list[dict[str, torch.Tensor]] = []
    original = opt.block_perturbation

    def record(grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        eps = original(grads)
        fresh = ball_perturbation(posterior, grads, opt.rho, opt.metric, opt.damping)
        seen.append({b: eps[b] - fresh[b] for b in eps})
        return eps

    monkeypatch.setattr(opt, "block_perturbation", record)
    step()
    step()
    assert len(seen) == 2
    for diff in seen:
        assert set(diff) == {"mean", "log_std"}
        assert all(float(v.abs().max()) == 0.0 for v in diff.values())


def test_the_reparam_variance_forms_the_geometry_every_step(monkeypatch) -> None:
    """The per-step curvature moves σ at every update: nothing may be kept."""
    calls = counting_geometry(monkeypatch)
    _, _, step = problem(curvature="reparam")
    for _ in range(4):
        step()
    assert len(calls) == 4


def test_weights_follow_the_factor_and_the_noise() -> None:
    """D z₂ is kept between the passes of a step; a changed D or a new z₂ is seen at once, and
    w is exactly μ + σ⊙z₁ + D z₂ (under no_grad, and differentiable in D where asked)."""
    posterior, _, _ = problem()
    with torch.no_grad():
        posterior.factor.copy_(torch.randn_like(posterior.factor))

    def expected() -> torch.Tensor:
        p = posterior
        return torch.addcmul(p.mean, p.std, p.noise_diag) + p.noise_factor @ p.factor.T

    posterior.factor_grad = False
    first = posterior.weights()
    assert torch.equal(first, expected())
    with torch.no_grad():
        posterior.factor.mul_(2.0)
    assert torch.equal(posterior.weights(), expected())
    posterior.resample()
    assert torch.equal(posterior.weights(), expected())
    posterior.factor_grad = True
    w = posterior.weights()
    assert w.requires_grad and torch.equal(w, expected())
    (grad,) = torch.autograd.grad(w.sum(), [posterior.factor])
    assert torch.allclose(grad, posterior.noise_factor.expand_as(grad))


def test_the_kept_sigma_follows_log_sigma() -> None:
    """Without log σ's gradient, σ = e^{log σ} is kept between passes and steps; a log σ changed
    in place, or replaced, is seen at once."""
    posterior, _, _ = problem()
    posterior.log_std_grad = False

    def expected() -> torch.Tensor:
        p = posterior
        noise = p.noise_factor @ p.factor.T if p.rank else 0.0
        return torch.addcmul(p.mean, p.log_std.detach().exp(), p.noise_diag) + noise

    assert torch.equal(posterior.weights(), expected())
    kept = posterior.weights()
    assert torch.equal(posterior.weights(), kept)
    with torch.no_grad():
        posterior.log_std.add_(0.5)
    assert torch.equal(posterior.weights(), expected())
    assert not torch.equal(posterior.weights(), kept)
    posterior.log_std = nn.Parameter(posterior.log_std.detach() - 1.0)
    assert torch.equal(posterior.weights(), expected())


def test_log_std_gradient_is_skipped_only_where_nobody_reads_it() -> None:
    """The natural variance reads log σ's gradient in the first pass (ε moves log σ) and not in
    the second; the mean's gradient is the same either way."""
    posterior, opt, _ = problem()
    x = torch.randn(8, 10)
    assert posterior.log_std_grad  # first pass: ε needs it
    grads = []
    for flag in (True, False):
        posterior.log_std_grad = flag
        posterior.zero_grad()
        posterior(x).square().sum().backward()
        grads.append(posterior.mean.grad.clone())
        assert (posterior.log_std.grad is not None) == flag
    assert torch.equal(grads[0], grads[1])
    opt._on_perturb()
    assert not posterior.log_std_grad  # the natural variance: σ is set by its rule


def test_sigma_is_kept_through_a_step_that_puts_log_sigma_back() -> None:
    """A step moves log σ to θ + ε and copies it back: between refreshes the σ kept before the
    step is kept on (no e^{log σ} over d per step), and it is e^{log σ}, bit for bit."""
    posterior, _, step = problem(refresh_every=1000)
    step()  # the first update refreshes σ and D
    step()
    kept = posterior._detached_std()
    for _ in range(3):
        step()
        assert posterior._detached_std() is kept
    assert torch.equal(kept, posterior.log_std.detach().exp())


def test_a_lazy_step_never_revives_a_stale_sigma() -> None:
    """log σ changed in place between steps, then a lazy step (no pass at θ, so σ is not
    recomputed before the move): the σ kept from before the change must not be kept on."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))
    x, y = torch.randn(32, 10), torch.randint(0, 3, (32,))
    posterior = GaussianPosterior(model, "all", rank=2, init_std=0.01)
    variance = NaturalVariance(ess=32, data=x, refresh_every=1000)
    opt = SABMA(posterior, variance=variance, lr=0.05, perturb_every=2)

    def closure() -> torch.Tensor:
        loss = cross_entropy(posterior(x), y)
        loss.backward()
        return loss

    for _ in range(3):  # fresh, lazy, fresh
        opt.zero_grad()
        opt.step(closure)
    assert opt.reuse_due
    with torch.no_grad():
        posterior.log_std.add_(0.25)
    opt.zero_grad()
    opt.step(closure)  # lazy
    assert torch.equal(posterior._detached_std(), posterior.log_std.detach().exp())
