"""Selective prediction: a classifier that may abstain on its least confident inputs.

Sort the inputs by confidence, most confident first; at coverage k/n the classifier answers the
top k and its *selective risk* is their error rate. The risk–coverage curve is that risk for
k = 1..n; ``aurc`` its mean (the area under it, Geifman et al. 2019); ``e_aurc`` the excess over
the best possible ordering of the same errors (all errors last); ``acc_at_<c>`` the accuracy on
the ⌈c·n⌉ most confident inputs. Inputs tied in confidence are taken in a random order — the
figures are the expectation over it (so a constant confidence has the overall error rate at
every coverage, whatever the input order).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

COVERAGES = (0.8, 0.9, 0.95)
SELECTIVE_KEYS = ("aurc", "e_aurc", *(f"acc_at_{round(100 * c)}" for c in COVERAGES))


def risk_coverage(confidence: Tensor, correct: Tensor) -> tuple[Tensor, Tensor]:
    """(coverage k/n, expected selective risk at k) for k = 1..n (float64)."""
    confidence = confidence.detach().double().cpu().reshape(-1)
    errors = (~correct.detach().bool().cpu().reshape(-1)).double()
    n = len(confidence)
    if n == 0 or len(errors) != n:
        raise ValueError(f"need as many correctness flags as confidences (got {len(errors)}, {n})")
    if not bool(torch.isfinite(confidence).all()):
        raise ValueError("the confidences hold NaN or infinite values")
    order = torch.argsort(confidence, descending=True, stable=True)
    conf, err = confidence[order], errors[order]
    # tie groups: the first position of each group, and every position's group
    new_group = torch.ones(n, dtype=torch.bool)
    new_group[1:] = conf[1:] != conf[:-1]
    group = torch.cumsum(new_group.long(), 0) - 1
    starts = torch.nonzero(new_group).reshape(-1)
    sizes = torch.diff(torch.cat([starts, torch.tensor([n])]))
    group_errors = torch.zeros(len(starts), dtype=torch.float64).index_add_(0, group, err)
    errors_before = torch.cumsum(group_errors, 0) - group_errors
    k = torch.arange(1, n + 1, dtype=torch.float64)
    inside = k - starts[group].double()  # positions of the group taken at k
    expected_errors = errors_before[group] + inside * group_errors[group] / sizes[group]
    return k / n, expected_errors / k


def selective_metrics(confidence: Tensor, correct: Tensor) -> dict[str, float]:
    """AURC, E-AURC and the accuracy at 80 / 90 / 95 % coverage (see the module docstring)."""
    _, risk = risk_coverage(confidence, correct)
    n = len(risk)
    right = int(correct.bool().sum())
    k = torch.arange(1, n + 1, dtype=torch.float64)
    best = (k - right).clamp_min(0) / k  # every error after every right answer
    out = {"aurc": float(risk.mean()), "e_aurc": float(risk.mean() - best.mean())}
    for c in COVERAGES:
        out[f"acc_at_{round(100 * c)}"] = float(1 - risk[max(1, math.ceil(c * n)) - 1])
    return out
