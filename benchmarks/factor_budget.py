"""The posterior the over-budget refresh gives, against the one from every row of G.

    python -m benchmarks.factor_budget [--json benchmarks/results/factor_budget.json]

Where the per-example gradients of the Fisher refresh do not fit ``factor_floats`` (2²⁶ floats
by default), the diagonal still comes from every row of G and the factor from a uniform sample
of the rows (:func:`sabma.variance.fisher_gradients.fisher_sketch`). This compares the two
refreshes from the same θ on the CPU MLP of ``benchmarks.step_cost`` (784-1024-1024-10, subset
``all``, d = 1.9 M, K = 5, 256 inputs): σ (its spread and the largest change), the factor (its
singular values, the principal cosines between the two column spaces, ‖DDᵀ − D'D'ᵀ‖/‖D'D'ᵀ‖) and
what the factor adds along its own columns (uᵀΣu / uᵀdiag(σ²)u for its left singular vectors).
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Any

import torch
from torch import Tensor

from benchmarks.common import machine, write_json
from benchmarks.step_cost import flat_prior, mlp
from sabma import SABMA, GaussianPosterior, NaturalVariance

RANK = 5
INPUTS = 256


def refreshed(
    model: torch.nn.Module, x: Tensor, floats: int | None
) -> tuple[Tensor, Tensor, float]:
    """σ and D after one Fisher refresh (``floats``: the rows' budget, None: the default)."""
    posterior = GaussianPosterior(copy.deepcopy(model), "all", rank=RANK, init_std=0.01)
    budget = {} if floats is None else {"factor_floats": floats}
    variance = NaturalVariance(
        ess=len(x), curvature="fisher", data=x, refresh_every=10**9, **budget
    )
    optimizer = SABMA(posterior, prior=flat_prior(posterior), variance=variance, lr=0.01)
    start = time.perf_counter()
    optimizer.refresh_curvature()
    seconds = time.perf_counter() - start
    return posterior.std.detach().clone(), posterior.factor.detach().clone(), seconds


def describe(std: Tensor, factor: Tensor, seconds: float) -> dict[str, Any]:
    picked = std[torch.randperm(std.numel(), generator=torch.Generator().manual_seed(0))[: 10**5]]
    p1, p50, p99 = torch.quantile(picked, torch.tensor([0.01, 0.5, 0.99])).tolist()
    left, singular, _ = torch.linalg.svd(factor, full_matrices=False)
    diagonal = (left.square() * std.square().unsqueeze(1)).sum(dim=0)
    return {
        "refresh_s": seconds,
        "std_p1_p50_p99": [p1, p50, p99],
        "std_spread_p99_over_p1": p99 / p1,
        "factor_singular_values": singular.tolist(),
        "variance_ratio_along_columns": ((diagonal + singular.square()) / diagonal).tolist(),
    }


def compare(a: tuple[Tensor, Tensor], b: tuple[Tensor, Tensor]) -> dict[str, Any]:
    """a against the reference b: σ's largest relative change, and the two factors."""
    (std_a, d_a), (std_b, d_b) = a, b
    cosines = torch.linalg.svdvals(torch.linalg.qr(d_a)[0].T @ torch.linalg.qr(d_b)[0])

    def inner(x: Tensor, y: Tensor) -> float:  # ⟨xxᵀ, yyᵀ⟩ through K × K products
        return float((x.T @ y).square().sum())

    gap = inner(d_a, d_a) + inner(d_b, d_b) - 2 * inner(d_a, d_b)
    return {
        "std_max_relative_change": float(((std_a - std_b).abs() / std_b).max()),
        "principal_cosines": cosines.tolist(),
        "factor_outer_relative_frobenius": max(gap, 0.0) ** 0.5 / inner(d_b, d_b) ** 0.5,
        "factor_trace_ratio": float(d_a.square().sum() / d_b.square().sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="benchmarks/results/factor_budget.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    model, x = mlp(), torch.randn(INPUTS, 784)
    budget = refreshed(model, x, None)
    every_row = refreshed(model, x, 2**40)
    result = {
        "machine": machine(),
        "case": f"MLP 784-1024-1024-10 all, K={RANK}, {INPUTS} inputs",
        "budget": describe(*budget),
        "every_row": describe(*every_row),
        "budget_vs_every_row": compare(budget[:2], every_row[:2]),
    }
    for key in ("budget", "every_row", "budget_vs_every_row"):
        print(key, result[key])
    write_json(args.json, result)


if __name__ == "__main__":
    main()
