"""Accuracy, NLL, ECE and Brier score of predictive probabilities.

All functions take ``probs`` of shape (n, C) (rows sum to 1) and integer ``labels`` of shape (n,).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check(probs: Tensor, labels: Tensor) -> None:
    if probs.dim() != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(
            f"expected probs (n, C) and labels (n,), got {tuple(probs.shape)} "
            f"and {tuple(labels.shape)}"
        )
    if probs.shape[0] == 0:
        raise ValueError("cannot compute metrics of an empty set")


def accuracy(probs: Tensor, labels: Tensor) -> float:
    """Fraction of points whose most probable class is the label."""
    _check(probs, labels)
    return float((probs.argmax(dim=1) == labels).double().mean())


def negative_log_likelihood(probs: Tensor, labels: Tensor, eps: float = 1e-12) -> float:
    """Mean over points of −log p̄(y | x) (probabilities already averaged over samples)."""
    _check(probs, labels)
    picked = probs.double().gather(1, labels.long().unsqueeze(1)).squeeze(1)
    return float(-torch.log(picked.clamp_min(eps)).mean())


def expected_calibration_error(probs: Tensor, labels: Tensor, bins: int = 15) -> float:
    """ECE with ``bins`` equal-width confidence bins over the max predicted probability.

    Bin b holds confidences in ((b−1)/B, b/B]; a confidence of exactly 0 goes to the first bin
    and exactly 1.0 to the last. Every point is counted exactly once.
    """
    _check(probs, labels)
    confidence, predicted = probs.double().max(dim=1)
    correct = (predicted == labels).double()
    index = (torch.ceil(confidence * bins).long() - 1).clamp(0, bins - 1)
    conf_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, confidence)
    acc_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, correct)
    return float((conf_sum - acc_sum).abs().sum() / confidence.numel())


def brier_score(probs: Tensor, labels: Tensor) -> float:
    """Mean over points of Σ_c (p_c − 1[y = c])²."""
    _check(probs, labels)
    onehot = torch.nn.functional.one_hot(labels.long(), probs.shape[1]).double()
    return float(((probs.double() - onehot) ** 2).sum(dim=1).mean())


def classification_metrics(probs: Tensor, labels: Tensor, bins: int = 15) -> dict[str, float]:
    """``{"acc", "nll", "ece", "brier"}`` of one predictive."""
    return {
        "acc": accuracy(probs, labels),
        "nll": negative_log_likelihood(probs, labels),
        "ece": expected_calibration_error(probs, labels, bins),
        "brier": brier_score(probs, labels),
    }
