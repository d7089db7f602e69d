"""Metrics against torchmetrics and scikit-learn, and the ECE edge cases."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import accuracy_score, log_loss
from torchmetrics.functional.classification import multiclass_calibration_error

from sabma.metrics import (
    accuracy,
    brier_score,
    classification_metrics,
    expected_calibration_error,
    negative_log_likelihood,
)


def random_predictions(
    n: int = 500, c: int = 5, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(3 * torch.randn(n, c, generator=g, dtype=torch.float64), dim=1)
    labels = torch.randint(0, c, (n,), generator=g)
    return probs, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_sklearn_and_torchmetrics(seed: int) -> None:
    probs, labels = random_predictions(seed=seed)
    assert accuracy(probs, labels) == pytest.approx(accuracy_score(labels, probs.argmax(1)))
    assert negative_log_likelihood(probs, labels) == pytest.approx(
        log_loss(labels, probs.numpy(), labels=list(range(5)))
    )
    reference = multiclass_calibration_error(probs.float(), labels, num_classes=5, n_bins=15)
    assert expected_calibration_error(probs, labels) == pytest.approx(float(reference), abs=1e-6)
    onehot = torch.nn.functional.one_hot(labels, 5).double()
    assert brier_score(probs, labels) == pytest.approx(float(((probs - onehot) ** 2).sum(1).mean()))


def test_ece_counts_every_point_once_including_confidence_one_and_bin_edges() -> None:
    # confidences exactly 1.0, exactly on a bin edge (2/15 < 1/5 … use 0.6 = 9/15), and ties
    probs = torch.tensor(
        [[1.0, 0.0], [1.0, 0.0], [0.6, 0.4], [0.4, 0.6], [0.5, 0.5]], dtype=torch.float64
    )
    labels = torch.tensor([0, 1, 0, 0, 1])
    # bins: {1.0: correct, wrong} → |2·1 − 1| = 1; {0.6: correct, wrong} → |1.2 − 1| = 0.2;
    # {0.5 (argmax 0, label 1): wrong} → 0.5.  ECE = (1 + 0.2 + 0.5) / 5
    assert expected_calibration_error(probs, labels) == pytest.approx(1.7 / 5)
    perfect = torch.eye(3, dtype=torch.float64)
    assert expected_calibration_error(perfect, torch.arange(3)) == 0.0


def test_summary_and_errors() -> None:
    probs, labels = random_predictions()
    assert set(classification_metrics(probs, labels)) == {"acc", "nll", "ece", "brier"}
    with pytest.raises(ValueError, match="expected probs"):
        accuracy(probs, labels[:-1])
    with pytest.raises(ValueError, match="empty"):
        accuracy(probs[:0], labels[:0])
