"""OOD-detection metrics against a hand-computed case and scikit-learn; ties and constants."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sabma.metrics.ood import ood_detection

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def test_a_hand_computed_case() -> None:
    inside, outside = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 3.0, 4.0])
    got = ood_detection(inside, outside)
    # P(u_out > u_in): pairs (1,0) 1, (1,1) ½, (1,2) 0, (3,·) 3, (4,·) 3 → 7.5 / 9
    assert got["auroc"] == pytest.approx(7.5 / 9)
    # the threshold that keeps 95 % of the in-distribution inputs keeps all three (u ≤ 2);
    # of the OOD inputs it keeps u = 1: FPR95 = 1/3
    assert got["fpr95"] == pytest.approx(1 / 3)
    # AUPR-out: OOD positive, by u descending: 4 ✓, 3 ✓, then {2 ✗}, then the tie {1 ✓, 1 ✗}
    # precision at each recall step: 1, 1, then 3/5 at recall 1 → AP = (1 + 1 + 0.6) / 3
    assert got["aupr_out"] == pytest.approx((1 + 1 + 0.6) / 3)
    # AUPR-in: in-distribution positive, by u ascending: 0 ✓, {1 ✓, 1 ✗} (tie), 2 ✓ →
    # precisions at the recall steps 1, 2/3 (the tie), 3/4 → AP = (1 + 2/3 + 3/4) / 3
    assert got["aupr_in"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    # swapping which set is OOD mirrors the AUROC
    assert ood_detection(outside, inside)["auroc"] == pytest.approx(1 - got["auroc"])


def test_equal_to_scikit_learn_with_ties() -> None:
    rng = np.random.default_rng(0)
    inside = rng.integers(0, 5, 200).astype(float)  # many ties
    outside = rng.integers(2, 8, 150).astype(float)
    got = ood_detection(inside, outside)
    is_out = np.r_[np.zeros(200), np.ones(150)]
    scores = np.r_[inside, outside]
    assert got["auroc"] == pytest.approx(sklearn_metrics.roc_auc_score(is_out, scores))
    assert got["aupr_out"] == pytest.approx(sklearn_metrics.average_precision_score(is_out, scores))
    assert got["aupr_in"] == pytest.approx(
        sklearn_metrics.average_precision_score(1 - is_out, -scores)
    )
    # FPR95 by brute force over thresholds: the smallest share of OOD kept while ≥ 95 % of the
    # in-distribution inputs are kept (u ≤ t)
    best = min(
        float((outside <= t).mean()) for t in np.unique(scores) if (inside <= t).mean() >= 0.95
    )
    assert got["fpr95"] == pytest.approx(best)


def test_a_constant_score_is_chance_and_bad_scores_are_refused() -> None:
    got = ood_detection(torch.zeros(3), torch.zeros(5))
    assert got == pytest.approx({"auroc": 0.5, "aupr_in": 3 / 8, "aupr_out": 5 / 8, "fpr95": 1.0})
    with pytest.raises(ValueError, match="non-empty"):
        ood_detection(torch.zeros(0), torch.zeros(5))
    with pytest.raises(ValueError, match="NaN or infinite"):
        ood_detection(torch.tensor([0.0, float("nan")]), torch.zeros(5))
