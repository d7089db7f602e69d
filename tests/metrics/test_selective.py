"""Selective prediction: AURC, E-AURC and accuracy at a coverage, with ties in expectation."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from sabma.metrics.selective import risk_coverage, selective_metrics


def test_a_hand_computed_case() -> None:
    confidence = torch.tensor([0.9, 0.8, 0.7, 0.6])
    correct = torch.tensor([True, True, False, True])
    got = selective_metrics(confidence, correct)
    # risks at k = 1..4: 0, 0, 1/3, 1/4; the best order (the error last): 0, 0, 0, 1/4
    assert got["aurc"] == pytest.approx((1 / 3 + 1 / 4) / 4)
    assert got["e_aurc"] == pytest.approx((1 / 3 + 1 / 4) / 4 - (1 / 4) / 4)
    assert got["acc_at_80"] == pytest.approx(0.75)  # ⌈0.8·4⌉ = 4 answered
    # the order of the inputs does not matter, only their confidences
    perm = torch.tensor([2, 0, 3, 1])
    assert selective_metrics(confidence[perm], correct[perm]) == pytest.approx(got)


def test_ties_are_the_expectation_over_their_orders() -> None:
    confidence = torch.tensor([0.9, 0.5, 0.5, 0.5, 0.2])
    correct = torch.tensor([True, False, True, True, False])
    _, risk = risk_coverage(confidence, correct)
    tied = [1, 2, 3]
    curves = []
    for order in itertools.permutations(tied):
        ranked = correct[[0, *order, 4]].double()
        errors = torch.cumsum(1 - ranked, 0)
        curves.append(errors / torch.arange(1, 6))
    torch.testing.assert_close(risk, torch.stack(curves).mean(0).double())
    # a constant confidence: the overall error rate at every coverage
    _, flat = risk_coverage(torch.ones(5), correct)
    torch.testing.assert_close(flat, torch.full((5,), 2 / 5, dtype=torch.float64))


def test_a_perfect_ordering_has_no_excess() -> None:
    correct = torch.tensor([True] * 7 + [False] * 3)
    confidence = torch.linspace(1, 0, 10)  # every error least confident
    got = selective_metrics(confidence, correct)
    assert got["e_aurc"] == pytest.approx(0.0, abs=1e-12)
    assert got["acc_at_90"] == pytest.approx(7 / 9) and got["acc_at_80"] == pytest.approx(7 / 8)
    # the worst ordering: errors first
    worst = selective_metrics(-confidence, correct)
    assert worst["aurc"] > got["aurc"] and math.isclose(worst["acc_at_80"], 5 / 8)
