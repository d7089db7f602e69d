"""Temperature scaling recovers a known temperature and never worsens the fitted NLL."""

from __future__ import annotations

import pytest
import torch
from torch.nn.functional import cross_entropy

from sabma.predict import apply_temperature, fit_temperature


def test_recovers_the_temperature_that_made_logits_overconfident() -> None:
    g = torch.Generator().manual_seed(0)
    logits = 2 * torch.randn(20_000, 5, generator=g)
    labels = torch.distributions.Categorical(logits=logits).sample()
    overconfident = torch.log_softmax(3.0 * logits, dim=1)
    assert fit_temperature(overconfident, labels) == pytest.approx(3.0, rel=0.03)


def test_scaled_nll_is_no_worse_and_probabilities_normalise() -> None:
    g = torch.Generator().manual_seed(1)
    log_probs = torch.log_softmax(torch.randn(300, 4, generator=g), 1)
    labels = torch.randint(0, 4, (300,), generator=g)
    t = fit_temperature(log_probs, labels)
    scaled = apply_temperature(log_probs, t)
    assert float(cross_entropy(scaled, labels)) <= float(cross_entropy(log_probs, labels)) + 1e-9
    torch.testing.assert_close(scaled.exp().sum(1), torch.ones(300))
