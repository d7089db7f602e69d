"""Blocks of per-example Fisher gradients formed on demand: the same rows, and the same sums of
squares, as the rows formed in full."""

from __future__ import annotations

import pytest
import torch

from sabma import GaussianPosterior
from sabma.variance.fisher_gradients import fisher_gradient_blocks, fisher_sketch
from sabma.variance.layer_gradients import sampled_layer_gradients
from sabma.variance.row_blocks import DenseRows, LayerRows
from tests.conftest import mlp
from tests.variance.test_factor_and_fisher import _conv_bn_net, _Tokens, shifted_statistics
from tests.variance.test_layer_calls import _Convs

F64 = torch.float64


def _hooked_block(build, subset: str, shape: tuple[int, ...], draws: int) -> LayerRows:
    """A hooked pass's block of ``draws`` label draws per example (float64, running statistics
    away from (0, 1) so that x̂ matters)."""
    torch.manual_seed(4)
    posterior = GaussianPosterior(shifted_statistics(build().double()), subset).double()
    posterior.eval()
    x = torch.randn(*shape, dtype=F64)
    w = posterior.mean.detach() + 0.1 * torch.randn(posterior.dim, dtype=F64)
    labels = torch.randint(0, 3, (shape[0], draws))
    result = sampled_layer_gradients(posterior, w, x, lambda probs, keep: labels[keep])
    assert result is not None
    block, _ = result
    assert isinstance(block, LayerRows)
    return block


CASES = [
    pytest.param(_conv_bn_net, "norm+head", (5, 2, 6, 6), id="batchnorm-and-linear-head"),
    pytest.param(_Tokens, "all", (5, 4, 6), id="layernorm-and-linear-over-tokens"),
    pytest.param(mlp, "all", (5, 2), id="mlp-outer-products"),
    pytest.param(_Convs, "all", (5, 2, 8, 8), id="convolutions"),
]


@pytest.mark.parametrize(("build", "subset", "shape"), CASES)
@pytest.mark.parametrize("draws", [1, 3])
def test_square_sums_are_those_of_the_formed_rows(build, subset, shape, draws) -> None:
    """Σ g⊙g over the block without forming it (outer products summed as (g²)ᵀx²) equals the
    column sums of the squares of its rows."""
    block = _hooked_block(build, subset, shape, draws)
    rows = block.rows()
    assert rows.shape == (draws * shape[0], block.posterior.dim) == (len(block), rows.shape[1])
    torch.testing.assert_close(block.square_sum(), rows.square().sum(0), rtol=1e-12, atol=1e-14)
    assert torch.equal(block.rows(), rows)  # the sums leave the block's gradients as they were


@pytest.mark.parametrize(("build", "subset", "shape"), CASES)
def test_rows_at_an_index_are_those_rows(build, subset, shape) -> None:
    """Rows picked across draws, out of order and repeated: exactly those of the full block."""
    block = _hooked_block(build, subset, shape, draws=3)
    index = torch.tensor([14, 0, 7, 7, 3, 10])
    assert torch.equal(block.rows(index), block.rows()[index])
    assert block.rows(torch.tensor([], dtype=torch.long)).shape == (0, block.posterior.dim)


def test_a_dense_block_squares_its_own_rows() -> None:
    """DenseRows gives its rows, then their square sums (squaring them in place: spent)."""
    rows = torch.randn(4, 6, dtype=F64)
    expected = rows.square().sum(0)
    block = DenseRows(rows.clone())
    assert torch.equal(block.rows(torch.tensor([2, 0])), rows[[2, 0]])
    assert torch.equal(block.square_sum(), expected)


def _algorithm_r(posterior, x, max_rows: int, draws: int, batch: int, seed: int):
    """The sketch the slow way: every row formed, kept or replaced one at a time (Algorithm R,
    the generator's draws interleaved with the blocks' as in the refresh), every square summed."""
    generator = torch.Generator().manual_seed(seed)
    kept, square_sum, t = [], 0.0, 0
    blocks = fisher_gradient_blocks(
        posterior, x, label_samples=draws, batch_size=batch, generator=generator
    )
    for block in blocks:
        rows = block.rows()
        square_sum = square_sum + rows.square().sum(0)
        for row in rows:
            if t < max_rows:
                kept.append(row.clone())
            elif max_rows:
                slot = int(torch.randint(t + 1, (1,), generator=generator))
                if slot < max_rows:
                    kept[slot] = row.clone()
            t += 1
    return torch.stack(kept) if kept else torch.zeros(0, posterior.dim, dtype=F64), square_sum / t


@pytest.mark.parametrize("max_rows", [0, 1, 4, 7, 10, 46])
@pytest.mark.parametrize(("draws", "batch"), [(1, 4), (3, 5)])
def test_the_streamed_sketch_is_algorithm_r(max_rows: int, draws: int, batch: int) -> None:
    """Over the budget, hooked blocks that form only the rows that take a slot give exactly the
    rows of Algorithm R over every formed row (budgets that end inside a block, at its end,
    before the first block and beyond all 23·draws rows), and the same diagonal."""
    torch.manual_seed(7)
    posterior = GaussianPosterior(mlp(3, 3, 3).double(), "all").double()
    x = torch.randn(23, 3, dtype=F64)
    for seed in range(3):
        sketch = fisher_sketch(
            posterior,
            x,
            max_rows=max_rows,
            label_samples=draws,
            batch_size=batch,
            generator=torch.Generator().manual_seed(seed),
        )
        rows, diagonal = _algorithm_r(posterior, x, max_rows, draws, batch, seed)
        assert sketch.count == 23 * draws
        assert torch.equal(sketch.rows, rows)
        torch.testing.assert_close(sketch.diagonal, diagonal, rtol=1e-12, atol=1e-15)
