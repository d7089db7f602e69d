"""`shape_summary`: what a trained Gaussian posterior looks like, in a few numbers.

Test metrics alone cannot tell a posterior whose variance the data shaped from a point estimate
with isotropic jitter; these figures can (they go into a run's metrics.json and report):

* quantiles of σ over coordinates, and ``std_spread`` = σ₉₉/σ₁ (1 for an isotropic jitter);
* ``factor_share`` = tr(D Dᵀ) / Σσ²: the low-rank factor's share of the total variance;
* ``factor_gain``: per column d_k, the variance it adds along its own direction relative to the
  diagonal's there, ‖d_k‖⁴ / (d_kᵀ diag(σ²) d_k) (0: an empty column; 1: as much again as the
  diagonal) — a factor can matter along its directions while its share of the trace is tiny.
"""

from __future__ import annotations

import torch

from sabma.posterior.lowrank import LowRankGaussian


@torch.no_grad()
def shape_summary(gaussian: LowRankGaussian) -> dict[str, float | list[float]]:
    std = gaussian.var.detach().double().sqrt()
    ordered = std.sort().values  # (torch.quantile refuses more than 2²⁴ values)
    q = [ordered[round(p * (len(ordered) - 1))] for p in (0.01, 0.5, 0.99)]
    factor = gaussian.factor.detach().double()
    total = float(std.square().sum())
    norms = factor.square().sum(0)
    diagonal_along = (std.square().unsqueeze(1) * factor.square()).sum(0)
    gain = torch.where(norms > 0, norms.square() / diagonal_along.clamp_min(1e-300), 0.0)
    return {
        "std_p1": float(q[0]),
        "std_p50": float(q[1]),
        "std_p99": float(q[2]),
        "std_spread": float(q[2] / q[0]) if q[0] > 0 else float("inf"),
        "factor_share": float(norms.sum()) / total if total > 0 else 0.0,
        "factor_gain": [float(g) for g in gain],
    }
