"""The posterior-shape figures of a run's report, on Gaussians whose answers are known."""

from __future__ import annotations

import math

import torch

from sabma.posterior.lowrank import LowRankGaussian
from sabma.posterior.summary import shape_summary


def test_an_isotropic_jitter_has_no_spread_and_no_factor() -> None:
    g = LowRankGaussian(
        torch.zeros(500, dtype=torch.float64),
        torch.full((500,), 1e-4, dtype=torch.float64),
        torch.zeros(500, 3, dtype=torch.float64),
    )
    shape = shape_summary(g)
    assert math.isclose(shape["std_p50"], 0.01, rel_tol=1e-9)
    assert math.isclose(shape["std_spread"], 1.0, rel_tol=1e-9)
    assert shape["factor_share"] == 0.0 and shape["factor_gain"] == [0.0, 0.0, 0.0]


def test_spread_share_and_gain_of_a_known_gaussian() -> None:
    d = 1001
    std = torch.logspace(-3, -1, d, dtype=torch.float64)  # σ from 0.001 to 0.1, evenly in log
    factor = torch.zeros(d, 2, dtype=torch.float64)
    factor[0, 0] = 0.002  # on the narrowest coordinate: 4 × its variance 1e-6
    factor[:, 1] = 0.001  # spread out: ‖d‖² = d·1e-6, along itself against mean σ²
    shape = shape_summary(
        LowRankGaussian(torch.zeros(d, dtype=torch.float64), std.square(), factor)
    )
    assert math.isclose(shape["std_spread"], 10 ** (2 * 0.98), rel_tol=1e-3)
    total = float(std.square().sum())
    assert math.isclose(shape["factor_share"], (4e-6 + d * 1e-6) / total, rel_tol=1e-9)
    gain_0, gain_1 = shape["factor_gain"]
    assert math.isclose(gain_0, 4.0, rel_tol=1e-9)
    assert math.isclose(gain_1, d * 1e-6 / float(std.square().mean()), rel_tol=1e-9)
