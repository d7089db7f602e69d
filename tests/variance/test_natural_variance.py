"""The natural-gradient variance: its fixed points against closed forms on problems with a known
answer (docs/method.md §3), and the pieces it is built from."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.functional import cross_entropy

from sabma import SABMA, GaussianPosterior, LowRankGaussian, NaturalVariance
from sabma.variance import ivon_update, reparam_hessian

F64 = torch.float64


def isotropic(d: int, var: float) -> LowRankGaussian:
    return LowRankGaussian(
        torch.zeros(d, dtype=F64), torch.full((d,), var, dtype=F64), torch.zeros(d, 0, dtype=F64)
    )


def logistic_data(n: int = 400, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent features of very different scales: a nearly diagonal GGN whose diagonal
    spans a factor ~25."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=gen, dtype=F64) * torch.tensor([2.0, 1.0, 0.5, 0.25], dtype=F64)
    w_true = torch.tensor([[0.5, -0.5, 1.0, 0.25], [-0.5, 0.5, -1.0, -0.25]], dtype=F64)
    y = torch.multinomial(torch.softmax(x @ w_true.T, 1), 1, generator=gen).squeeze(1)
    return x, y


def ggn_diagonal(posterior: GaussianPosterior, x: torch.Tensor) -> torch.Tensor:
    """diag of the mean GGN of softmax cross-entropy at μ for a bias-free linear model."""
    with torch.no_grad():
        probs = torch.softmax(posterior.mean_forward(x), 1)
    per_class = [(probs[:, c] * (1 - probs[:, c]))[:, None] * x**2 for c in range(probs.shape[1])]
    return torch.stack(per_class, 1).mean(0).reshape(-1)


def train(
    posterior: GaussianPosterior, optimizer: SABMA, x: torch.Tensor, y: torch.Tensor, steps: int
) -> None:
    def closure() -> torch.Tensor:
        loss = cross_entropy(posterior(x), y)
        loss.backward()
        return loss

    for _ in range(steps):
        optimizer.zero_grad()
        optimizer.step(closure)


@pytest.mark.parametrize(
    ("curvature", "steps"), [("reparam", 5000), ("fisher", 201)], ids=["reparam", "fisher"]
)
def test_variance_matches_the_ggn_rule_on_logistic_regression(curvature: str, steps: int) -> None:
    """After training, σ² = T/(λ(h + δ)) per coordinate (h: the exact GGN diagonal at μ) within
    20 %, and the spread of σ follows √(h_max/h_min). (The ``fisher`` run ends on a refresh.)"""
    torch.manual_seed(0)
    x, y = logistic_data()
    n, prior_var, temperature = len(y), 4.0, 0.5
    posterior = GaussianPosterior(nn.Linear(4, 2, bias=False), "all", init_std=0.1).double()
    options = NaturalVariance(
        ess=n,
        temperature=temperature,
        curvature=curvature,
        beta2=0.999,
        inputs=x if curvature == "fisher" else None,
        label_samples=16,
        max_examples=n,
        refresh_every=20,
    )
    opt = SABMA(
        posterior,
        torch.optim.SGD,
        rho=0.0,
        lr=0.2,
        momentum=0.9,
        prior=isotropic(posterior.dim, prior_var),
        variance=options,
    )
    train(posterior, opt, x, y, steps)
    h = ggn_diagonal(posterior, x)
    expected = temperature / (n * (h + 1 / (prior_var * n)))
    var = posterior.std.detach() ** 2
    assert torch.allclose(var, expected, rtol=0.2), (var / expected).tolist()
    spread = float(posterior.std.max() / posterior.std.min())
    assert spread == pytest.approx(float((h.max() / h.min()).sqrt()), rel=0.2)
    assert spread > 3  # the variance is shaped by the data, not a uniform jitter


def quadratic_posterior(init_std: float) -> GaussianPosterior:
    return GaussianPosterior(nn.Linear(1, 1, bias=False), "all", init_std=init_std).double()


def quadratic_closure(posterior: GaussianPosterior, curvature: float, target: float):
    one = torch.ones(1, 1, dtype=F64)

    def closure() -> torch.Tensor:
        loss = 0.5 * curvature * (posterior(one).squeeze() - target) ** 2
        loss.backward()
        return loss

    return closure


@pytest.mark.parametrize("temperature", [1.0, 0.1])
def test_stationary_variance_on_a_quadratic_natural_rule(temperature: float) -> None:
    """ℓ̄(w) = ½h(w − a)², prior N(0, σ_p²), λ = N: the rule's fixed point is the tempered
    posterior's variance T/(Nh + 1/σ_p²) (docs/method.md §3), and its mean the MAP."""
    torch.manual_seed(1)
    # the prior's precision equals the data's (1/σ_p² = Nh): δ's scale matters to the answer;
    # a small a keeps the MAP's data gradient h(μ − a), the noise of ĥ = g z/σ, small
    n, h, a, prior_var = 50, 2.0, 0.1, 0.01
    posterior = quadratic_posterior(0.5)
    options = NaturalVariance(ess=n, temperature=temperature, curvature="reparam", beta2=0.998)
    opt = SABMA(
        posterior,
        torch.optim.SGD,
        rho=0.0,
        lr=0.05,
        prior=isotropic(1, prior_var),
        variance=options,
    )
    closure = quadratic_closure(posterior, h, a)
    stds, means = [], []
    for step in range(3000):
        opt.zero_grad()
        opt.step(closure)
        if step >= 1500:
            stds.append(float(posterior.std))
            means.append(float(posterior.mean))
    var = sum(s * s for s in stds) / len(stds)
    assert var == pytest.approx(temperature / (n * h + 1 / prior_var), rel=0.1)
    map_mean = n * h * a / (n * h + 1 / prior_var)  # the mean's iterates average to the MAP
    assert sum(means) / len(means) == pytest.approx(map_mean, rel=0.01)


def test_stationary_variance_on_a_quadratic_gradient_path() -> None:
    """The gradient path with kl_weight = β/N: E_q[ℓ̄] + (β/N)KL(q‖p) is stationary at
    σ² = 1/(Nh/β + 1/σ_p²) — β tempers the prior too (docs/method.md §3)."""
    torch.manual_seed(2)
    n, h, a, prior_var, beta = 50, 2.0, 1.5, 0.3, 0.5
    posterior = quadratic_posterior(0.1)
    opt = SABMA(
        posterior,
        torch.optim.SGD,
        rho=0.0,
        lr=0.1,
        variance="gradient",
        prior=isotropic(1, prior_var),
        kl_weight=beta / n,
    )
    closure = quadratic_closure(posterior, h, a)
    log_stds = []
    for step in range(4000):
        opt.zero_grad()
        opt.step(closure)
        if step >= 2000:
            log_stds.append(float(posterior.log_std))
    var = math.exp(2 * sum(log_stds) / len(log_stds))
    assert var == pytest.approx(1 / (n * h / beta + 1 / prior_var), rel=0.1)


class SingleLogit(nn.Module):
    """Binary logistic regression with the second logit pinned at 0 (no softmax invariance)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(features, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x)
        return torch.cat([z, torch.zeros_like(z)], dim=1)


def test_factor_aligns_with_the_posterior_covariance_of_a_correlated_problem() -> None:
    """Two nearly collinear features: the posterior is widest along their difference, which a
    diagonal cannot show; the factor's leading column must point there (cosine > 0.9 with the
    top eigenvector of the tempered posterior covariance (λ·GGN + Σ_p⁻¹)⁻¹·T)."""
    torch.manual_seed(3)
    gen = torch.Generator().manual_seed(3)
    n, prior_var, temperature = 300, 4.0, 1.0
    base = torch.randn(n, 1, generator=gen, dtype=F64)
    x = torch.cat(
        [
            base + 0.1 * torch.randn(n, 1, generator=gen, dtype=F64),
            base + 0.1 * torch.randn(n, 1, generator=gen, dtype=F64),
            torch.randn(n, 2, generator=gen, dtype=F64),
        ],
        dim=1,
    )
    w_true = torch.tensor([0.7, 0.7, -1.0, 0.5], dtype=F64)
    y = (torch.rand(n, generator=gen, dtype=F64) > torch.sigmoid(x @ w_true)).long()
    posterior = GaussianPosterior(SingleLogit(4), "all", rank=2, init_std=0.1).double()
    options = NaturalVariance(
        ess=n,
        temperature=temperature,
        curvature="fisher",
        inputs=x,
        label_samples=32,
        max_examples=n,
        refresh_every=25,
    )
    opt = SABMA(
        posterior,
        torch.optim.SGD,
        rho=0.0,
        lr=0.3,
        momentum=0.9,
        prior=isotropic(4, prior_var),
        variance=options,
    )
    train(posterior, opt, x, y, 300)
    with torch.no_grad():
        p = torch.sigmoid(x @ posterior.mean)
    ggn = (x * (p * (1 - p)).unsqueeze(1)).T @ x / n
    cov = temperature * torch.linalg.inv(n * ggn + torch.eye(4, dtype=F64) / prior_var)
    top = torch.linalg.eigh(cov).eigenvectors[:, -1]
    column = posterior.factor.detach()[:, 0]
    cosine = float((column @ top).abs() / column.norm())
    assert cosine > 0.9
    # and the factor carries real variance: q's marginal along that direction is the
    # posterior's, not the diagonal's under-statement of it
    q_cov = (
        torch.diag(posterior.std.detach() ** 2)
        + posterior.factor.detach() @ posterior.factor.T.detach()
    )
    along_q, along_true = float(top @ q_cov @ top), float(top @ cov @ top)
    assert along_q == pytest.approx(along_true, rel=0.25)
    diagonal_only = float(top @ torch.diag(posterior.std.detach() ** 2) @ top)
    assert diagonal_only < 0.5 * along_true


def test_reparam_estimate_is_unbiased_on_a_quadratic() -> None:
    """E[g ⊙ z₁/σ] = diag H for ℓ = ½ wᵀHw with w = μ + σ⊙z₁ (Stein's lemma)."""
    gen = torch.Generator().manual_seed(4)
    a = torch.randn(3, 3, generator=gen, dtype=F64)
    hess = a @ a.T + torch.eye(3, dtype=F64)
    mu = torch.randn(3, generator=gen, dtype=F64)
    std = torch.tensor([0.3, 1.0, 2.0], dtype=F64)
    z = torch.randn(200000, 3, generator=gen, dtype=F64)
    grads = (mu + std * z) @ hess
    estimate = reparam_hessian(grads, z, std).mean(0)
    assert torch.allclose(estimate, hess.diagonal(), rtol=0.03)


def test_ivon_update_keeps_the_precision_positive() -> None:
    """Whatever the (negative, noisy) estimates, h + δ stays > 0 (IVON's correction); without
    the correction it does not."""
    gen = torch.Generator().manual_seed(5)
    delta = 0.01
    h = torch.full((1000,), 0.05, dtype=F64)
    plain = h.clone()
    for _ in range(200):
        h_hat = 3.0 * torch.randn(1000, generator=gen, dtype=F64) - 1.0
        h = ivon_update(h, h_hat, 0.9, delta)
        plain = 0.9 * plain + 0.1 * h_hat
    assert bool((h + delta > 0).all())
    assert bool((plain + delta <= 0).any())
    with pytest.raises(ValueError, match="beta2"):
        ivon_update(h, h, 1.0, delta)
