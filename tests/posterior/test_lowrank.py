"""The Woodbury algebra of LowRankGaussian against dense torch.linalg and torch.distributions."""

from __future__ import annotations

import pytest
import torch

from sabma.posterior.lowrank import LowRankGaussian, kl_divergence


def random_gaussian(d: int, k: int, seed: int) -> LowRankGaussian:
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(d, generator=g, dtype=torch.float64)
    var = torch.rand(d, generator=g, dtype=torch.float64) + 0.1
    factor = torch.randn(d, k, generator=g, dtype=torch.float64)
    return LowRankGaussian(mean, var, factor)


def dense_cov(q: LowRankGaussian) -> torch.Tensor:
    return torch.diag(q.var) + q.factor @ q.factor.T


@pytest.mark.parametrize("k", [0, 1, 4])
def test_woodbury_pieces_match_dense_linear_algebra(k: int) -> None:
    q = random_gaussian(7, k, seed=k)
    cov = dense_cov(q)
    prec = torch.linalg.inv(cov)
    x = torch.randn(7, dtype=torch.float64)
    xs = torch.randn(7, 3, dtype=torch.float64)
    torch.testing.assert_close(q.cov_matvec(x), cov @ x)
    torch.testing.assert_close(q.cov_matvec(xs), cov @ xs)
    torch.testing.assert_close(q.precision_matvec(x), prec @ x)
    torch.testing.assert_close(q.precision_matvec(xs), prec @ xs)
    torch.testing.assert_close(q.precision_diag(), torch.diagonal(prec))
    torch.testing.assert_close(q.logdet_cov(), torch.logdet(cov))


@pytest.mark.parametrize("k", [0, 3])
def test_log_prob_matches_torch_distribution(k: int) -> None:
    q = random_gaussian(5, k, seed=10 + k)
    w = torch.randn(4, 5, dtype=torch.float64)
    reference = torch.distributions.MultivariateNormal(q.mean, dense_cov(q))
    torch.testing.assert_close(q.log_prob(w), reference.log_prob(w))
    torch.testing.assert_close(q.to_torch().log_prob(w), reference.log_prob(w))


@pytest.mark.parametrize(("kq", "kp"), [(0, 0), (3, 0), (0, 2), (3, 2)])
def test_closed_form_kl_matches_torch(kq: int, kp: int) -> None:
    q, p = random_gaussian(6, kq, seed=1), random_gaussian(6, kp, seed=2)
    expected = torch.distributions.kl_divergence(
        torch.distributions.MultivariateNormal(q.mean, dense_cov(q)),
        torch.distributions.MultivariateNormal(p.mean, dense_cov(p)),
    )
    torch.testing.assert_close(kl_divergence(q, p), expected)
    assert float(kl_divergence(q, q)) == pytest.approx(0.0, abs=1e-10)


def test_kl_gradient_reaches_every_parameter() -> None:
    q = random_gaussian(5, 2, seed=3)
    p = random_gaussian(5, 1, seed=4)
    mean, var, factor = (t.clone().requires_grad_() for t in (q.mean, q.var, q.factor))
    kl_divergence(LowRankGaussian(mean, var, factor), p).backward()
    for t in (mean, var, factor):
        assert t.grad is not None and t.grad.abs().sum() > 0


def test_samples_have_the_right_mean_and_covariance() -> None:
    q = random_gaussian(4, 2, seed=5)
    draws = q.sample(200_000, torch.Generator().manual_seed(0))
    torch.testing.assert_close(draws.mean(0), q.mean, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(draws.T), dense_cov(q), atol=0.05, rtol=0.02)


def test_shape_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="factor must have shape"):
        LowRankGaussian(torch.zeros(3), torch.ones(3), torch.zeros(4, 1))
    with pytest.raises(ValueError, match="mean and var"):
        LowRankGaussian(torch.zeros(3), torch.ones(2), torch.zeros(3, 1))
