"""The SA-BMA step: the KL ball, its special cases (SAM, bSAM), and optimiser hygiene."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from torch import nn
from torch.nn.functional import cross_entropy

from sabma import SABMA, GaussianPosterior, LowRankGaussian, NaturalVariance, kl_divergence
from tests.conftest import TinyResNet, mlp
from tests.step.reference import manual_sam

X = torch.randn(32, 2, generator=torch.Generator().manual_seed(1))
Y = (X[:, 0] * X[:, 1] > 0).long() + (X[:, 0] > 1).long()


def posterior64(rank: int = 0, factor_scale: float = 0.0, std: float = 0.05) -> GaussianPosterior:
    torch.manual_seed(3)
    posterior = GaussianPosterior(mlp(), "all", rank=rank).double()
    with torch.no_grad():
        posterior.log_std.copy_(math.log(std) + 0.3 * torch.randn(posterior.dim))
        posterior.factor.normal_(0.0, factor_scale) if factor_scale else None
    return posterior


def frozen(posterior: GaussianPosterior) -> LowRankGaussian:
    q = posterior.gaussian()
    return LowRankGaussian(
        q.mean.detach().clone(), q.var.detach().clone(), q.factor.detach().clone()
    )


def closure_for(posterior: GaussianPosterior, x: torch.Tensor = X, y: torch.Tensor = Y):
    def closure() -> torch.Tensor:
        loss = cross_entropy(posterior(x.to(posterior.mean.dtype)), y)
        loss.backward()
        return loss

    return closure


def kl_ratio_after_first_step(posterior: GaussianPosterior, rho: float, **kwargs) -> float:
    opt = SABMA(posterior, variance="gradient", lr=0.1, rho=rho, **kwargs)
    closure_for(posterior)()
    before = frozen(posterior)
    opt.first_step()
    return float(kl_divergence(frozen(posterior), before)) / (rho**2 / 2)


# --- the KL ball --------------------------------------------------------------------------------
@pytest.mark.parametrize("rho", [0.01, 0.1])
def test_kl_ball_diagonal_posterior(rho: float) -> None:
    assert kl_ratio_after_first_step(posterior64(rank=0), rho) == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("rho", [0.01, 0.1])
def test_kl_ball_low_rank_default_blocks(rho: float) -> None:
    posterior = posterior64(rank=3, factor_scale=0.05)
    assert kl_ratio_after_first_step(posterior, rho) == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("factor_scale", [0.0, 0.05])
@pytest.mark.parametrize("rho", [0.01, 0.1])
def test_kl_ball_with_the_factor_perturbed(factor_scale: float, rho: float) -> None:
    posterior = posterior64(rank=3, factor_scale=factor_scale)
    ratio = kl_ratio_after_first_step(posterior, rho, perturb=("mean", "log_std", "factor"))
    assert ratio == pytest.approx(1.0, abs=0.02)


def test_euclidean_ball_has_radius_rho() -> None:
    posterior = posterior64(rank=2, factor_scale=0.05)
    opt = SABMA(
        posterior,
        variance="gradient",
        lr=0.1,
        rho=0.07,
        metric="euclidean",
        perturb=("mean", "log_std", "factor"),
    )
    closure_for(posterior)()
    before = [p.detach().clone() for p in posterior.parameters()]
    opt.first_step()
    moved = torch.cat(
        [(p.detach() - b).reshape(-1) for p, b in zip(posterior.parameters(), before, strict=True)]
    )
    assert float(moved.norm()) == pytest.approx(0.07, rel=1e-9)


# --- special cases --------------------------------------------------------------------------------
def test_reduces_to_sam_with_vanishing_variance_euclidean_mean_only() -> None:
    torch.manual_seed(0)
    model = mlp().double()
    sam_model = copy.deepcopy(model)
    posterior = GaussianPosterior(model, "all", init_std=1e-30)
    lr, momentum, rho = 0.1, 0.9, 0.05
    opt = SABMA(
        posterior,
        variance="gradient",
        lr=lr,
        momentum=momentum,
        rho=rho,
        metric="euclidean",
        perturb=("mean",),
    )
    for _ in range(4):
        opt.zero_grad()
        opt.step(closure_for(posterior))
    expected = manual_sam(sam_model, X.double(), Y, steps=4, lr=lr, momentum=momentum, rho=rho)
    torch.testing.assert_close(posterior.mean.detach(), expected, atol=1e-12, rtol=0)


def test_diagonal_fisher_mean_only_is_variance_scaled_ascent() -> None:
    """bSAM's case: ε_μ = ρ σ² ⊙ g / √(gᵀ diag(σ²) g)."""
    posterior = posterior64(rank=0)
    opt = SABMA(posterior, variance="gradient", lr=0.1, rho=0.05, perturb=("mean",))
    closure_for(posterior)()
    g = posterior.mean.grad.clone()
    mean_before = posterior.mean.detach().clone()
    var = posterior.std.detach() ** 2
    opt.first_step()
    eps = posterior.mean.detach() - mean_before
    torch.testing.assert_close(eps, 0.05 * var * g / torch.sqrt((g * var * g).sum()))


def test_low_rank_ascent_is_preconditioned_by_sigma_with_one_global_norm() -> None:
    """ε = ρ F⁻¹g / √(gᵀF⁻¹g) jointly over the mean and log-std blocks."""
    posterior = posterior64(rank=2, factor_scale=0.1)
    opt = SABMA(posterior, variance="gradient", lr=0.1, rho=0.05)
    closure_for(posterior)()
    g_mean, g_s = posterior.mean.grad.clone(), posterior.log_std.grad.clone()
    q = frozen(posterior)
    sigma = torch.diag(q.var) + q.factor @ q.factor.T
    precision_diag = torch.diagonal(torch.linalg.inv(sigma))
    fisher_s = 2 * (q.var * precision_diag) ** 2
    total = g_mean @ sigma @ g_mean + (g_s**2 / fisher_s).sum()
    mean_before, s_before = q.mean.clone(), posterior.log_std.detach().clone()
    opt.first_step()
    torch.testing.assert_close(
        posterior.mean.detach() - mean_before, 0.05 * sigma @ g_mean / total.sqrt()
    )
    torch.testing.assert_close(
        posterior.log_std.detach() - s_before, 0.05 * (g_s / fisher_s) / total.sqrt()
    )


# --- what the step does to the model and the state -----------------------------------------------
def test_batchnorm_statistics_are_updated_once_per_step() -> None:
    model = TinyResNet().train()
    reference = copy.deepcopy(model)
    posterior = GaussianPosterior(model, "norm+head", rank=1)
    opt = SABMA(posterior, variance="gradient", lr=0.1, rho=0.1)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    with torch.no_grad():  # one plain forward at the same sample, on a copy
        posterior.factor.normal_(0, 0.01)
        GaussianPosterior(reference, "norm+head", rank=1).forward_with(posterior.weights(), x)
    opt.step(closure_for(posterior, x, y))
    stats = {n: b for n, b in model.named_buffers()}
    for name, value in reference.named_buffers():
        torch.testing.assert_close(stats[name], value, msg=name)
    assert int(model.stem[1].num_batches_tracked) == 1


def test_the_perturbed_pass_reuses_the_noise_and_the_next_step_draws_new() -> None:
    posterior = posterior64(rank=2)
    opt = SABMA(posterior, variance="gradient", lr=0.1, rho=0.1)
    closure_for(posterior)()
    noise = posterior.noise_diag.clone(), posterior.noise_factor.clone()
    opt.first_step(zero_grad=True)
    assert not posterior.update_running_stats
    assert torch.equal(posterior.noise_diag, noise[0]) and torch.equal(
        posterior.noise_factor, noise[1]
    )
    closure_for(posterior)()
    opt.second_step()
    assert posterior.update_running_stats
    assert not torch.equal(posterior.noise_diag, noise[0])
    frozen_noise = SABMA(posterior, variance="gradient", lr=0.1, resample=False)
    before = posterior.noise_diag.clone()
    frozen_noise.step(closure_for(posterior))
    assert torch.equal(posterior.noise_diag, before)


@pytest.mark.parametrize("decay_covariance", [False, True])
def test_weight_decay_applies_to_the_mean_only_by_default(decay_covariance: bool) -> None:
    posterior = posterior64(rank=2, factor_scale=0.1)
    opt = SABMA(
        posterior, variance="gradient", lr=0.5, weight_decay=0.1, decay_covariance=decay_covariance
    )
    before = {n: p.detach().clone() for n, p in posterior.named_parameters()}

    def no_data_gradient() -> torch.Tensor:
        loss = 0.0 * posterior(X.double()).sum()
        loss.backward()
        return loss

    opt.step(no_data_gradient)
    torch.testing.assert_close(posterior.mean.detach(), before["mean"] * (1 - 0.05))
    for name in ("log_std", "factor"):
        expected = before[name] * (1 - 0.05) if decay_covariance else before[name]
        torch.testing.assert_close(getattr(posterior, name).detach(), expected)


def test_kl_to_prior_term_is_added_at_the_unperturbed_point() -> None:
    """With and without the KL term, the same noise and data: the updates differ by exactly
    lr · ∇KL(θ) at the unperturbed θ (the perturbation comes from the data loss alone)."""
    prior_dim = posterior64(rank=1).dim
    prior = LowRankGaussian(
        torch.zeros(prior_dim, dtype=torch.float64),
        torch.full((prior_dim,), 0.2, dtype=torch.float64),
        torch.zeros(prior_dim, 1, dtype=torch.float64),
    )
    results = []
    for kl_weight in (0.0, 0.3):
        posterior = posterior64(rank=1, factor_scale=0.1)
        expected = torch.autograd.grad(0.3 * posterior.kl_to(prior), list(posterior.parameters()))
        opt = SABMA(
            posterior, variance="gradient", lr=0.5, rho=0.5, prior=prior, kl_weight=kl_weight
        )
        opt.step(closure_for(posterior))
        results.append([p.detach().clone() for p in posterior.parameters()])
    assert expected[0].abs().sum() > 0  # the KL pulls on the mean
    for without, with_kl, g in zip(*results, expected, strict=True):
        torch.testing.assert_close(without - with_kl, 0.5 * g)


# --- optimiser hygiene -----------------------------------------------------------------
def train(posterior: GaussianPosterior, opt: SABMA, steps: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(X), (8,), generator=gen)
        opt.zero_grad()
        opt.step(closure_for(posterior, X[idx], Y[idx]))


def variance_options(kind: str) -> dict:
    """SABMA keyword arguments for each way of learning the variance."""
    d = GaussianPosterior(mlp(), "all").dim
    prior = LowRankGaussian(
        torch.zeros(d, dtype=torch.float64),
        torch.ones(d, dtype=torch.float64),
        torch.zeros(d, 0, dtype=torch.float64),
    )
    if kind == "gradient":
        return {"variance": "gradient"}
    if kind == "reparam":
        return {
            "prior": prior,
            "variance": NaturalVariance(ess=len(X), curvature="reparam", source="clean"),
        }
    return {
        "prior": prior,
        "variance": NaturalVariance(
            ess=len(X), curvature="fisher", inputs=X.double(), refresh_every=2
        ),
    }


@pytest.mark.parametrize("variance", ["gradient", "reparam", "fisher"])
@pytest.mark.parametrize(
    ("base", "kwargs"), [(torch.optim.SGD, {"momentum": 0.9}), (torch.optim.Adam, {})]
)
def test_state_dict_round_trip_continues_identically(base, kwargs, variance: str) -> None:
    """Mid-training state dicts (posterior + optimiser, the curvature h included) continue the
    run bit for bit."""
    kwargs = {**kwargs, **variance_options(variance)}
    posterior = posterior64(rank=2, factor_scale=0.05)
    opt = SABMA(posterior, base, lr=0.01, rho=0.1, weight_decay=1e-3, **kwargs)
    train(posterior, opt, 3, seed=0)
    saved = copy.deepcopy(posterior.state_dict()), copy.deepcopy(opt.state_dict())
    if variance != "gradient":
        assert "curvature" in saved[1]["natural_variance"]  # h travels with the optimiser
    rng = torch.get_rng_state()
    train(posterior, opt, 3, seed=1)

    torch.manual_seed(123)  # a different fresh start, overwritten by the loaded state
    resumed = GaussianPosterior(mlp(), "all", rank=2).double()
    resumed_opt = SABMA(resumed, base, lr=0.01, rho=0.1, weight_decay=1e-3, **kwargs)
    resumed.load_state_dict(saved[0])
    resumed_opt.load_state_dict(saved[1])
    torch.set_rng_state(rng)
    train(resumed, resumed_opt, 3, seed=1)
    for a, b in zip(posterior.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert resumed_opt.state is resumed_opt.base_optimizer.state
    assert resumed_opt.param_groups is resumed_opt.base_optimizer.param_groups


def test_cosine_schedule_drives_the_base_optimizer_without_warnings() -> None:
    posterior = posterior64()
    opt = SABMA(posterior, variance="gradient", lr=0.1, momentum=0.9)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for t in range(1, 6):
            train(posterior, opt, 1, seed=t)
            schedule.step()
            expected = 0.1 * (1 + math.cos(math.pi * t / 10)) / 2
            assert [g["lr"] for g in opt.base_optimizer.param_groups] == pytest.approx(
                [expected] * 2
            )


def test_gradient_clipping_between_the_passes_bounds_the_update() -> None:
    posterior = posterior64(rank=1, factor_scale=0.1)
    opt = SABMA(posterior, variance="gradient", lr=1.0, rho=0.1)
    before = torch.cat([p.detach().reshape(-1).clone() for p in posterior.parameters()])
    closure_for(posterior)()
    opt.first_step(zero_grad=True)
    closure_for(posterior)()
    raw = nn.utils.clip_grad_norm_(list(posterior.parameters()), max_norm=1e-3)
    opt.second_step()
    after = torch.cat([p.detach().reshape(-1) for p in posterior.parameters()])
    assert float(raw) > 1e-2
    assert float((after - before).norm()) == pytest.approx(1e-3, rel=1e-6)


@pytest.mark.parametrize("variance", ["gradient", "reparam", "fisher"])
def test_no_state_leaks_across_steps(variance: str) -> None:
    posterior = posterior64(rank=2)
    opt = SABMA(posterior, lr=0.1, momentum=0.9, **variance_options(variance))
    train(posterior, opt, 3, seed=0)
    if variance == "gradient":
        assert set(opt.state) == set(posterior.parameters())
        assert all(set(s) == {"momentum_buffer"} for s in opt.state.values())
    else:  # the mean has the base optimiser's state; σ and D follow the rule
        assert set(opt.state) == {posterior.mean}
        assert set(opt.state[posterior.mean]) == {"momentum_buffer"}
        assert set(opt.state_dict()["natural_variance"]) == {"curvature", "updates"}
        assert opt._curvature_estimate is None
    assert opt._backup == [] and posterior.update_running_stats
    with pytest.raises(RuntimeError, match="without first_step"):
        opt.second_step()
    closure_for(posterior)()
    opt.first_step()
    with pytest.raises(RuntimeError, match="twice"):
        opt.first_step()


@pytest.mark.parametrize("variance", ["gradient", "reparam", "fisher"])
def test_closure_and_two_step_api_agree(variance: str) -> None:
    results = []
    for use_closure in (True, False):
        posterior = posterior64(rank=1)
        opt = SABMA(posterior, lr=0.1, momentum=0.9, rho=0.1, **variance_options(variance))
        torch.manual_seed(5)
        for _ in range(3):
            opt.zero_grad()
            if use_closure:
                opt.step(closure_for(posterior))
            else:
                closure_for(posterior)()
                opt.first_step(zero_grad=True)
                closure_for(posterior)()
                opt.second_step()
        results.append(torch.cat([p.detach().reshape(-1) for p in posterior.parameters()]))
    assert torch.equal(results[0], results[1])


def test_bad_arguments_are_clear_errors() -> None:
    posterior = posterior64()
    prior = variance_options("reparam")["prior"]
    with pytest.raises(ValueError, match="pass data=train_loader"):
        SABMA(posterior, lr=0.1, prior=prior)
    with pytest.raises(ValueError, match="pass data=train_loader"):
        SABMA(posterior, lr=0.1, ess=10)
    with pytest.raises(ValueError, match="pass data=train_loader"):  # the call of version 0.1
        SABMA(posterior, torch.optim.SGD, rho=0.05, lr=0.1)
    with pytest.raises(ValueError, match="kl_weight applies to variance='gradient'"):
        SABMA(posterior, lr=0.1, data=X.double(), prior=prior, kl_weight=0.1)
    with pytest.raises(ValueError, match="variance must be"):
        SABMA(posterior, lr=0.1, variance="adam")
    with pytest.raises(ValueError, match="curvature is one of"):
        NaturalVariance(ess=10, curvature="hutchinson")
    with pytest.raises(ValueError, match="needs the training data"):
        NaturalVariance(ess=10, curvature="fisher")
    with pytest.raises(ValueError, match="ess must be a positive"):
        NaturalVariance(ess=-1, curvature="reparam")
    with pytest.raises(ValueError, match="ess= is needed"):
        NaturalVariance(curvature="reparam")
    with pytest.raises(ValueError, match="rho must be"):
        SABMA(posterior, variance="gradient", lr=0.1, rho=-1.0)
    with pytest.raises(ValueError, match="metric must be one of"):
        SABMA(posterior, variance="gradient", lr=0.1, metric="l1")
    with pytest.raises(ValueError, match="perturb must be"):
        SABMA(posterior, variance="gradient", lr=0.1, perturb=("weights",))
    with pytest.raises(ValueError, match="needs a prior"):
        SABMA(posterior, variance="gradient", lr=0.1, kl_weight=1.0)
    with pytest.raises(TypeError, match=r"pass the model itself, not model\.parameters"):
        SABMA(mlp().parameters(), lr=0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pass data=train_loader"):
        SABMA(mlp(), lr=0.1)
    with pytest.raises(ValueError, match="already has them"):
        SABMA(posterior, variance="gradient", rank=3)
    with pytest.raises(RuntimeError, match="run that loop first"):
        SABMA(posterior, variance="gradient", lr=0.1).step()


def test_block_learning_rate_scales_follow_the_schedule() -> None:
    posterior = posterior64(rank=2)
    opt = SABMA(
        posterior, variance="gradient", lr=0.1, block_lr_scale={"factor": 0.1, "log_std": 3.0}
    )
    lrs = {g["block"]: g["lr"] for g in opt.param_groups}
    assert lrs == pytest.approx({"mean": 0.1, "log_std": 0.3, "factor": 0.01})
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
    train(posterior, opt, 1, seed=0)
    schedule.step()
    lrs = {g["block"]: g["lr"] for g in opt.param_groups}
    assert lrs == pytest.approx({"mean": 0.05, "log_std": 0.15, "factor": 0.005})
    with pytest.raises(ValueError, match="block_lr_scale"):
        SABMA(posterior, variance="gradient", lr=0.1, block_lr_scale={"sigma": 2.0})


def test_a_diverged_covariance_is_a_clear_error() -> None:
    posterior = GaussianPosterior(mlp(), "all", rank=2)
    opt = SABMA(posterior, variance="gradient", lr=0.1, rho=0.5)
    x, y = torch.randn(8, 2), torch.randint(0, 3, (8,))
    cross_entropy(posterior(x), y).backward()
    with torch.no_grad():
        posterior.log_std[3] = float("nan")
        posterior.factor.fill_(0.1)
    with pytest.raises(FloatingPointError, match="training has diverged"):
        opt.first_step()
