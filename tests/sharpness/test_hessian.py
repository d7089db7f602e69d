"""HVPs against the dense Hessian, Lanczos against known spectra, Hutchinson against the trace."""

from __future__ import annotations

import pytest
import torch

from sabma import GaussianPosterior
from sabma.sharpness.hessian import hutchinson_trace, hvp_fn, loss_at, top_eigenvalues
from tests.conftest import mlp


@pytest.fixture
def problem() -> tuple[GaussianPosterior, list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    torch.manual_seed(0)
    posterior = GaussianPosterior(mlp(width=6).double(), "all")
    batches = [(torch.randn(7, 2).double(), torch.randint(0, 3, (7,))) for _ in range(3)]
    batches.append((torch.randn(4, 2).double(), torch.randint(0, 3, (4,))))  # uneven last batch
    w = posterior.mean.detach() + 0.3 * torch.randn(posterior.dim).double()
    return posterior, batches, w


def dense_hessian(posterior: GaussianPosterior, batches: list, w: torch.Tensor) -> torch.Tensor:
    return torch.autograd.functional.hessian(loss_at(posterior, batches), w)


def test_hvp_matches_the_dense_hessian(problem: tuple) -> None:
    posterior, batches, w = problem
    hessian = dense_hessian(posterior, batches, w)
    hvp = hvp_fn(posterior, batches, w)
    for _ in range(3):
        v = torch.randn(posterior.dim).double()
        torch.testing.assert_close(hvp(v), hessian @ v, rtol=1e-8, atol=1e-10)


def test_lanczos_recovers_the_top_of_the_dense_spectrum(problem: tuple) -> None:
    posterior, batches, w = problem
    exact = torch.linalg.eigvalsh(dense_hessian(posterior, batches, w)).flip(0)[:4]
    found = top_eigenvalues(hvp_fn(posterior, batches, w), posterior.dim, k=4, tol=1e-10)
    assert found.ok and found.values is not None
    torch.testing.assert_close(torch.tensor(found.values).double(), exact, rtol=1e-6, atol=1e-9)


def test_lanczos_recovers_a_prescribed_spectrum_with_negative_eigenvalues() -> None:
    """An operator Q diag(λ) Qᵀ with known λ (some negative, a near-degenerate pair on top)."""
    torch.manual_seed(1)
    d = 300
    lam = torch.cat([torch.tensor([50.0, 49.9, 20.0, 5.0, 4.0]), torch.rand(d - 5) * 3 - 2])
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
    matrix = q @ torch.diag(lam.double()) @ q.T
    found = top_eigenvalues(lambda v: matrix @ v, d, k=5, tol=1e-8)
    assert found.values is not None
    assert found.values == pytest.approx([50.0, 49.9, 20.0, 5.0, 4.0], rel=1e-6)


def test_a_solve_that_does_not_converge_is_reported_not_averaged(problem: tuple) -> None:
    posterior, batches, w = problem
    found = top_eigenvalues(hvp_fn(posterior, batches, w), posterior.dim, k=3, max_matvecs=4)
    assert not found.ok and found.values is None
    assert found.error is not None and "no convergence within 4" in found.error
    with pytest.raises(ValueError, match="top-k needs 1 <= k < d"):
        top_eigenvalues(lambda v: v, 5, k=5)


def test_hutchinson_trace_is_within_its_stated_error(problem: tuple) -> None:
    posterior, batches, w = problem
    exact = float(torch.trace(dense_hessian(posterior, batches, w)))
    estimate = hutchinson_trace(hvp_fn(posterior, batches, w), posterior.dim, probes=200, seed=3)
    assert estimate.stderr > 0
    assert abs(estimate.mean - exact) < 4 * estimate.stderr
    # for a diagonal operator every Rademacher probe gives the trace exactly
    diag = torch.linspace(-1, 5, 40, dtype=torch.float64)
    exact_diag = hutchinson_trace(lambda v: diag * v, 40, probes=5)
    assert exact_diag.mean == pytest.approx(float(diag.sum())) and exact_diag.stderr == 0
