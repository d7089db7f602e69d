"""The per-input figures behind the uncertainty scores: one pass, the same draws as the BMA."""

from __future__ import annotations

import math

import pytest
import torch

from sabma import GaussianPosterior
from sabma.models.tiny import TinyCNN
from sabma.predict import dataset
from sabma.predict.bma import sample_log_probs
from sabma.predict.dataset import predict_log_probs, predict_summary
from sabma.predict.summary import entropy


def _posterior() -> GaussianPosterior:
    torch.manual_seed(0)
    posterior = GaussianPosterior(TinyCNN(4), "norm+head", rank=2, init_std=0.3)
    posterior.eval()
    return posterior


def test_the_figures_equal_a_direct_computation_over_the_same_draws() -> None:
    posterior, x = _posterior(), torch.randn(13, 3, 8, 8)
    got = predict_summary(
        posterior, x, 6, temperature=2.0, batch_size=5, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        weights = posterior.sample_weights(6, torch.Generator().manual_seed(1))
        members = sample_log_probs(posterior, weights, x)  # (S, n, C)
        logits = torch.stack([posterior.forward_with(w, x) for w in weights])
    mixture = torch.logsumexp(members, 0) - math.log(6)
    torch.testing.assert_close(got.log_probs, mixture)
    torch.testing.assert_close(got.logits, logits.mean(0))
    torch.testing.assert_close(got.expected_entropy, entropy(members).mean(0))
    tempered = torch.log_softmax(logits / 2.0, -1)
    torch.testing.assert_close(got.tempered_log_probs, torch.logsumexp(tempered, 0) - math.log(6))
    mi = entropy(mixture) - entropy(members).mean(0)
    torch.testing.assert_close(got.mutual_information(), mi.clamp_min(0))
    assert float(mi.min()) > -1e-6 and float(mi.max()) > 1e-4  # Jensen, and the draws differ
    assert bool((got.mutual_information(tempered=True) >= 0).all())
    # the BMA itself is the one predict_log_probs gives for the same generator
    same = predict_log_probs(
        posterior, x, 6, batch_size=5, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(got.log_probs, same)


def test_chunked_draws_pool_to_the_same_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    posterior, x = _posterior(), torch.randn(7, 3, 8, 8)
    weights = posterior.sample_weights(9, torch.Generator().manual_seed(2))
    whole = predict_summary(posterior, x, weights=weights, temperature=0.5)
    monkeypatch.setattr(dataset, "SAMPLE_FLOATS", 2 * posterior.dim)  # chunks of 2 draws
    chunked = predict_summary(posterior, x, weights=weights, temperature=0.5)
    for name in ("log_probs", "logits", "expected_entropy", "tempered_log_probs"):
        torch.testing.assert_close(getattr(chunked, name), getattr(whole, name))


def test_a_point_estimate_has_no_epistemic_part() -> None:
    posterior, x = _posterior(), torch.randn(5, 3, 8, 8)
    got = predict_summary(posterior, x, point=True)
    assert float(got.mutual_information().abs().max()) < 1e-6
    torch.testing.assert_close(got.logits.log_softmax(-1), got.log_probs)


def test_scores_at_a_temperature_are_those_of_the_scaled_predictive() -> None:
    from sabma.predict.summary import Predictions, uncertainty_scores

    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.4, 0.3]])
    figures = Predictions(torch.log_softmax(logits, -1), logits, torch.zeros(2))
    raw = uncertainty_scores(figures)
    scaled = uncertainty_scores(figures, temperature=2.0)
    torch.testing.assert_close(scaled["msp"], -torch.softmax(logits / 2, -1).max(-1).values)
    torch.testing.assert_close(scaled["energy"], -2 * torch.logsumexp(logits / 2, -1))
    torch.testing.assert_close(raw["energy"], -torch.logsumexp(logits, -1))
    assert not torch.allclose(scaled["entropy"], raw["entropy"])
    assert "mi" in raw and "mi" not in uncertainty_scores(figures, draws=False)
