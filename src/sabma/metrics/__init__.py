"""Classification metrics of a predictive distribution (method.md §7)."""

from sabma.metrics.classification import (
    accuracy,
    brier_score,
    classification_metrics,
    expected_calibration_error,
    negative_log_likelihood,
)

__all__ = [
    "accuracy",
    "brier_score",
    "classification_metrics",
    "expected_calibration_error",
    "negative_log_likelihood",
]
