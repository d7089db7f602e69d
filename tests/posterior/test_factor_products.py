"""Products with the factor on every core (blocked over rows) against the plain products."""

from __future__ import annotations

import pytest
import torch

import sabma.posterior.factor_products as products
from sabma.posterior.factor_products import (
    add_factor_times_,
    factor_t_times,
    factor_times,
    tall_t_times,
    tall_times,
)


@pytest.fixture
def blocked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(products, "BLOCKED_MIN", 100)


def column_major(d: int, k: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(k, d, dtype=dtype).T


@pytest.mark.usefixtures("blocked")
@pytest.mark.parametrize("d", [100, 8 * 37, 8 * 37 + 5, 1001])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_blocked_products_equal_the_plain_ones(d: int, dtype: torch.dtype) -> None:
    torch.manual_seed(d)
    factor = column_major(d, 5, dtype)
    x, u, y = torch.randn(d, dtype=dtype), torch.randn(5, dtype=dtype), torch.randn(d, dtype=dtype)
    assert products._blocks(factor) == d // products.FACTOR_BLOCKS  # the blocked path runs
    # the same sums, up to their rounding
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(factor_times(factor, u), u @ factor.T, rtol=tol, atol=tol)
    expected = y.clone().addmv_(factor, u)
    torch.testing.assert_close(add_factor_times_(y, factor, u), expected, rtol=tol, atol=tol)
    torch.testing.assert_close(factor_t_times(factor, x), factor.T @ x, rtol=tol, atol=tol)


@pytest.mark.usefixtures("blocked")
def test_other_layouts_take_the_plain_product() -> None:
    factor = torch.randn(300, 4)  # row-major: no blocked view of its rows
    x, u = torch.randn(300), torch.randn(4)
    assert products._blocks(factor) == 0
    assert torch.equal(factor_t_times(factor, x), factor.T @ x)
    assert torch.equal(factor_times(factor, u), u @ factor.T)
    small = column_major(50, 4)  # below the size limit
    assert products._blocks(small) == 0
    strided = torch.randn(600, dtype=torch.float64)[::2]  # a non-contiguous x or y
    wide = column_major(300, 4)
    torch.testing.assert_close(factor_t_times(wide, strided), wide.T @ strided)
    y = torch.randn(600, dtype=torch.float64)[::2]
    expected = y.clone().addmv_(wide, u.double())
    torch.testing.assert_close(add_factor_times_(y, wide, u.double()), expected)


@pytest.mark.usefixtures("blocked")
@pytest.mark.parametrize("d", [8 * 29, 8 * 29 + 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tall_products_equal_the_plain_ones(d: int, dtype: torch.dtype) -> None:
    """uᵀv and u w for a tall u (the Fisher refresh's subspace iteration), blocked."""
    torch.manual_seed(d)
    u = column_major(d, 7, dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for v in (column_major(d, 3, dtype), torch.randn(d, 3, dtype=dtype)):  # either layout
        torch.testing.assert_close(tall_t_times(u, v), u.T @ v, rtol=tol, atol=tol)
    w = torch.randn(7, 3, dtype=dtype)
    torch.testing.assert_close(tall_times(u, w), u @ w, rtol=tol, atol=tol)
    kept = column_major(d, 3, dtype)  # a caller's buffer: written, and returned
    assert tall_times(u, w, out=kept) is kept
    assert torch.equal(kept, tall_times(u, w))
    row_major = u.contiguous()  # no blocked view: the plain products
    assert torch.equal(tall_t_times(row_major, w.new_ones(d, 2)), row_major.T @ w.new_ones(d, 2))
    assert torch.equal(tall_times(row_major, w), row_major @ w)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_factor_from_blocked_products_is_the_plain_one(monkeypatch, dtype) -> None:
    """The refresh's subspace iteration on the blocked path (its products into kept column-major
    buffers, QR into them) gives the factor of the plain path, to rounding."""
    from sabma.variance.factor import residual_factor

    d = 8 * 125 + 3
    gen = torch.Generator().manual_seed(0)
    u = column_major(d, 12, dtype) * 0.3
    var = torch.rand(d, generator=gen, dtype=dtype) + 0.1
    share = torch.rand(d, generator=gen, dtype=dtype) * 0.5 + 0.5
    previous = column_major(d, 3, dtype) * 0.01

    def factor() -> torch.Tensor:
        return residual_factor(
            var, share, u, 3, previous=previous, generator=torch.Generator().manual_seed(1)
        )

    plain = factor()
    monkeypatch.setattr(products, "BLOCKED_MIN", 100)
    assert products._blocks(u) == d // products.FACTOR_BLOCKS
    blocked = factor()
    # What must be equal is the covariance the factor adds, DDᵀ: its columns' norms here are
    # within 15 % of each other, so rounding may turn them within their span. In float32 the two
    # paths' sums differ by rounding, amplified by the unconverged rounds: 2·10⁻⁴ of max |DDᵀ|
    # measured, hence 10⁻³; float64 agrees to 3·10⁻¹⁴.
    tol = 1e-3 if dtype == torch.float32 else 1e-12
    covariance = plain @ plain.T
    torch.testing.assert_close(
        blocked @ blocked.T, covariance, rtol=0, atol=tol * float(covariance.abs().max())
    )
