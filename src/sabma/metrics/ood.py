"""Out-of-distribution detection: how well an uncertainty score separates a test set from an
out-of-distribution (OOD) set.

Scores are uncertainty scores — higher means "more likely OOD". Per pair of sets:

* ``auroc``: P(u_out > u_in) + ½ P(u_out = u_in), the area under the ROC curve (which side is
  called positive does not change it);
* ``aupr_in``: average precision with the in-distribution inputs as positives, scored by −u;
* ``aupr_out``: average precision with the OOD inputs as positives, scored by u;
* ``fpr95``: the fraction of OOD inputs accepted as in-distribution at the threshold that accepts
  95 % of the in-distribution ones (Hendrycks & Gimpel 2017; with ties, every input tied at the
  threshold is accepted).

The areas and the ROC curve are scikit-learn's (a maintained implementation; ties count ½). A
constant score gives AUROC ½, AUPR the share of the positives, FPR95 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

OOD_KEYS = ("auroc", "aupr_in", "aupr_out", "fpr95")


def _sklearn_metrics() -> Any:
    try:
        from sklearn import metrics
    except ImportError:
        raise ImportError(
            "OOD metrics need scikit-learn: pip install 'sabma[ood]' (or scikit-learn)"
        ) from None
    return metrics


def _scores(values: Tensor | np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(values.detach().cpu() if isinstance(values, Tensor) else values, float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{what}: expected a non-empty 1-d score, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{what}: the scores hold NaN or infinite values")
    return array


def ood_detection(
    in_scores: Tensor | np.ndarray, out_scores: Tensor | np.ndarray
) -> dict[str, float]:
    """AUROC, AUPR (in and out) and FPR at 95 % TPR of an uncertainty score (see the module
    docstring)."""
    metrics = _sklearn_metrics()
    inside = _scores(in_scores, "in-distribution")
    outside = _scores(out_scores, "out-of-distribution")
    scores = np.concatenate([inside, outside])
    is_out = np.concatenate([np.zeros(len(inside)), np.ones(len(outside))])
    fpr, tpr, _ = metrics.roc_curve(1 - is_out, -scores)  # in-distribution positive
    return {
        "auroc": float(metrics.roc_auc_score(is_out, scores)),
        "aupr_in": float(metrics.average_precision_score(1 - is_out, -scores)),
        "aupr_out": float(metrics.average_precision_score(is_out, scores)),
        "fpr95": float(fpr[np.searchsorted(tpr, 0.95, side="left")]),
    }


def roc_points(
    in_scores: Tensor | np.ndarray, out_scores: Tensor | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve (false-positive rate, true-positive rate) with the OOD inputs as positives."""
    metrics = _sklearn_metrics()
    inside = _scores(in_scores, "in-distribution")
    outside = _scores(out_scores, "out-of-distribution")
    is_out = np.concatenate([np.zeros(len(inside)), np.ones(len(outside))])
    fpr, tpr, _ = metrics.roc_curve(is_out, np.concatenate([inside, outside]))
    return fpr, tpr
