"""BMA averages probabilities of the same inputs over samples, before the log."""

from __future__ import annotations

import pytest
import torch

from sabma import GaussianPosterior
from sabma.predict import bma_log_probs, bma_probs
from tests.conftest import mlp


def make_posterior() -> GaussianPosterior:
    posterior = GaussianPosterior(mlp(), "all", rank=1, init_std=0.3).eval()
    with torch.no_grad():
        posterior.factor.normal_(0, 0.2)
    return posterior


def test_bma_is_the_mean_of_sample_softmaxes() -> None:
    posterior = make_posterior()
    x = torch.randn(10, 2)
    weights = posterior.sample_weights(7).detach()
    expected = torch.stack([torch.softmax(posterior.forward_with(w, x), 1) for w in weights]).mean(
        0
    )
    torch.testing.assert_close(bma_probs(posterior, x, weights=weights), expected)
    torch.testing.assert_close(bma_log_probs(posterior, x, weights=weights), expected.log())


def test_bma_rows_stay_aligned_with_their_inputs() -> None:
    """The prediction for a point does not depend on the batch it came in or its position."""
    posterior = make_posterior()
    x = torch.randn(12, 2)
    weights = posterior.sample_weights(5).detach()
    whole = bma_probs(posterior, x, weights=weights)
    perm = torch.randperm(12)
    torch.testing.assert_close(bma_probs(posterior, x[perm], weights=weights), whole[perm])
    halves = torch.cat(
        [bma_probs(posterior, x[:5], weights=weights), bma_probs(posterior, x[5:], weights=weights)]
    )
    torch.testing.assert_close(halves, whole)


def test_more_samples_spread_the_predictive_and_seeded_draws_repeat() -> None:
    posterior = make_posterior()
    x = torch.randn(50, 2)
    one = bma_probs(posterior, x, samples=1, generator=torch.Generator().manual_seed(0))
    many = bma_probs(posterior, x, samples=200, generator=torch.Generator().manual_seed(0))
    again = bma_probs(posterior, x, samples=200, generator=torch.Generator().manual_seed(0))
    assert torch.equal(many, again)
    entropy = lambda p: -(p * p.log()).sum(1).mean()  # noqa: E731
    assert entropy(many) > entropy(one)  # averaging is never more confident on average
    torch.testing.assert_close(many.sum(1), torch.ones(50))
    with pytest.raises(ValueError, match="at least 1"):
        bma_probs(posterior, x, samples=0)


def test_many_draws_stream_in_chunks_with_the_same_result(monkeypatch) -> None:
    """Beyond SAMPLE_FLOATS the draws are made and averaged chunk by chunk: the same predictive
    for the same weights, and never more than a chunk of draws at once (memory bounded in S)."""
    from sabma.predict import dataset

    posterior = GaussianPosterior(mlp(), "all", rank=2, init_std=0.3)
    x = torch.randn(7, 2)
    weights = posterior.sample_weights(40).detach()
    whole = dataset.predict_log_probs(posterior.eval(), x, weights=weights)
    monkeypatch.setattr(dataset, "SAMPLE_FLOATS", 6 * posterior.dim)  # chunks of 6 draws
    torch.testing.assert_close(dataset.predict_log_probs(posterior, x, weights=weights), whole)
    drawn: list[int] = []
    original = posterior.sample_weights

    def spy(n: int, generator=None):
        drawn.append(n)
        return original(n, generator)

    monkeypatch.setattr(posterior, "sample_weights", spy)
    out = dataset.predict_log_probs(posterior, x, samples=40)
    assert drawn == [6] * 6 + [4] and torch.allclose(out.exp().sum(1), torch.ones(7))
