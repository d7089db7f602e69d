"""GaussianPosterior: the sample plugged into the model, the distribution, state, devices."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sabma import GaussianPosterior, LowRankGaussian
from tests.conftest import TinyResNet, mlp


def randomise(posterior: GaussianPosterior, std_scale: float = 0.1) -> None:
    with torch.no_grad():
        posterior.log_std.copy_(
            torch.randn_like(posterior.log_std) * 0.3 + torch.log(torch.tensor(std_scale))
        )
        posterior.factor.normal_(0.0, 0.05)


def test_forward_runs_the_model_at_the_sample() -> None:
    model = TinyResNet().eval()
    posterior = GaussianPosterior(model, "norm+head", rank=2)
    randomise(posterior)
    x = torch.randn(5, 1, 8, 8)
    w = posterior.weights().detach()
    reference = copy.deepcopy(model)
    params = dict(reference.named_parameters())
    for name, value in posterior.unflatten(w).items():
        params[name].data.copy_(value)
    torch.testing.assert_close(posterior(x), reference(x))
    # the mean predictor is the model itself at initialisation (μ = current weights)
    torch.testing.assert_close(posterior.mean_forward(x), model(x))
    assert not torch.allclose(posterior(x), model(x))


def test_forward_leaves_model_parameters_and_buffers_untouched() -> None:
    model = TinyResNet().train()
    before = copy.deepcopy(model.state_dict())
    posterior = GaussianPosterior(model, "norm+head", rank=1)
    randomise(posterior)
    posterior.update_running_stats = False
    posterior(torch.randn(4, 1, 8, 8)).sum().backward()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], msg=key)
    assert all(p.grad is None for p in model.parameters())
    assert posterior.mean.grad is not None and posterior.log_std.grad is not None


def test_weights_follow_the_posterior_noise_mean_zero() -> None:
    """Resampled weights have mean μ and covariance Σ (catches noise drawn as N(1, 1))."""
    posterior = GaussianPosterior(mlp(width=2, classes=1, inputs=1), "head", rank=1).double()
    with torch.no_grad():
        posterior.log_std.copy_(torch.log(torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64)))
        posterior.factor.copy_(torch.tensor([[0.4], [-0.2], [0.1]], dtype=torch.float64))
    gen = torch.Generator().manual_seed(0)
    draws = []
    for _ in range(20_000):
        posterior.resample(gen)
        draws.append(posterior.weights().detach())
    stacked = torch.stack(draws)
    cov = posterior.distribution().covariance_matrix.detach()
    torch.testing.assert_close(stacked.mean(0), posterior.mean.detach(), atol=0.01, rtol=0)
    torch.testing.assert_close(torch.cov(stacked.T), cov, atol=0.01, rtol=0.05)


@pytest.mark.parametrize("rank", [0, 3])
def test_distribution_and_kl_agree_with_torch(rank: int) -> None:
    posterior = GaussianPosterior(mlp(), "all", rank=rank).double()
    randomise(posterior)
    dist = posterior.distribution()
    sigma = (
        torch.diag(posterior.std.detach() ** 2)
        + posterior.factor.detach() @ posterior.factor.detach().T
    )
    torch.testing.assert_close(dist.covariance_matrix.detach(), sigma)
    prior = LowRankGaussian(
        torch.zeros(posterior.dim, dtype=torch.float64),
        torch.full((posterior.dim,), 0.5, dtype=torch.float64),
        torch.randn(posterior.dim, 2, dtype=torch.float64) * 0.1,
    )
    expected = torch.distributions.kl_divergence(dist, prior.to_torch())
    torch.testing.assert_close(posterior.kl_to(prior), expected)
    other = GaussianPosterior(mlp(), "all", rank=1).double()
    torch.testing.assert_close(
        posterior.kl_to(other), torch.distributions.kl_divergence(dist, other.distribution())
    )


def test_state_dict_holds_theta_only_and_round_trips() -> None:
    model = TinyResNet()
    posterior = GaussianPosterior(model, rank=2)
    randomise(posterior)
    state = posterior.state_dict()
    assert set(state) == {"mean", "log_std", "factor", "noise_diag", "noise_factor"}
    assert [p.shape for p in posterior.parameters()] == [
        (posterior.dim,),
        (posterior.dim,),
        (posterior.dim, 2),
    ]
    fresh = GaussianPosterior(TinyResNet(), rank=2)
    fresh.load_state_dict(state)
    for key in state:
        torch.testing.assert_close(fresh.state_dict()[key], state[key])


def test_dtype_and_mode_are_forwarded_to_the_model() -> None:
    model = TinyResNet()
    posterior = GaussianPosterior(model).double()
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert posterior.noise_diag.dtype == torch.float64
    posterior.eval()
    assert not model.training
    posterior.train()
    assert model.training


def test_load_into_model_copies_the_mean() -> None:
    model = nn.Sequential(nn.Linear(2, 2))
    posterior = GaussianPosterior(model, "all")
    with torch.no_grad():
        posterior.mean.add_(1.0)
    posterior.load_into_model()
    torch.testing.assert_close(
        torch.cat([p.detach().reshape(-1) for p in model.parameters()]), posterior.mean.detach()
    )


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="rank must be a non-negative integer"):
        GaussianPosterior(mlp(), rank=-1)
    with pytest.raises(ValueError, match="init_std must be a positive"):
        GaussianPosterior(mlp(), init_std=0.0)
    posterior = GaussianPosterior(mlp())
    with pytest.raises(ValueError, match="weight vector of shape"):
        posterior.unflatten(torch.zeros(3))
    with pytest.raises(ValueError, match="at least 1"):
        posterior.sample_weights(0)


def test_channels_last_convolutions_get_channels_last_weights() -> None:
    """A channels-last network receives its sampled convolution weights channels-last (no
    per-call layout conversion inside the convolutions), with the same outputs and gradients."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.Flatten())
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 6, 6).contiguous(memory_format=torch.channels_last)
    posterior = GaussianPosterior(model, "all", rank=2, init_std=0.1)
    seen: list[bool] = []
    for conv in (model[0], model[2]):
        conv.register_forward_pre_hook(
            lambda m, _: seen.append(m.weight.is_contiguous(memory_format=torch.channels_last))
        )
    w = posterior.weights()
    out = posterior.forward_with(w, x)
    assert seen == [True, True]
    reference = torch.func.functional_call(model, posterior.unflatten(w), (x,))
    torch.testing.assert_close(out, reference)
    (grad,) = torch.autograd.grad(out.square().sum(), [posterior.mean], retain_graph=True)
    (expected,) = torch.autograd.grad(reference.square().sum(), [posterior.mean])
    torch.testing.assert_close(grad, expected)
