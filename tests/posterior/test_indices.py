"""The indices of a vector's large entries, found block by block, are ``nonzero``'s."""

from __future__ import annotations

import pytest
import torch

from sabma.posterior.indices import BLOCK, indices_above, union


def plain(values: torch.Tensor, threshold: float) -> torch.Tensor:
    return (values > threshold).nonzero().squeeze(1)


@pytest.mark.parametrize("n", [0, 1, BLOCK - 1, BLOCK, 5 * BLOCK + 7, 100_003])
@pytest.mark.parametrize("share", [0.0, 0.001, 0.3, 1.0])
def test_indices_above_equal_nonzero(n: int, share: float) -> None:
    gen = torch.Generator().manual_seed(n + int(1000 * share))
    values = torch.rand(n, generator=gen) * 0.5
    large = torch.rand(n, generator=gen) < share
    values[large] += 1.0
    if n > 3:  # a last entry in the tail, and the block maxima's edge cases
        values[-1] = 2.0
        values[0] = 0.75  # exactly at the threshold: not above it
    got = indices_above(values, 0.75)
    assert got.dtype == torch.int64
    assert torch.equal(got, plain(values, 0.75))


def test_a_nan_does_not_hide_its_block() -> None:
    values = torch.zeros(4 * BLOCK)
    values[BLOCK + 3] = float("nan")  # the block's maximum is NaN
    values[BLOCK + 9] = 5.0
    values[3 * BLOCK + 1] = -7.0
    assert indices_above(values, 1.0).tolist() == [BLOCK + 9]


def test_negative_thresholds_and_other_dtypes() -> None:
    values = torch.linspace(-1, 1, 3 * BLOCK + 5, dtype=torch.float64)
    assert torch.equal(indices_above(values, -0.2), plain(values, -0.2))
    with pytest.raises(ValueError, match="1-D"):
        indices_above(values.view(1, -1), 0.0)


def test_union_is_sorted_without_repeats() -> None:
    a, b = torch.tensor([1, 4, 9]), torch.tensor([0, 4, 10])
    assert union(a, b).tolist() == [0, 1, 4, 9, 10]
    assert union(a, torch.tensor([], dtype=torch.int64)).tolist() == [1, 4, 9]
