"""Learning: SA-BMA fits two moons, and its BMA predictive beats its own mean predictor on NLL."""

from __future__ import annotations

from dataclasses import replace

import torch

from sabma.examples.moons import MoonsConfig, make_moons, run_moons


def test_moons_are_two_balanced_separable_classes() -> None:
    x, y = make_moons(2000, 0.0, torch.Generator().manual_seed(0))
    assert x.shape == (2000, 2) and set(y.tolist()) == {0, 1}
    assert 0.45 < float(y.double().mean()) < 0.55
    # noise-free points lie on their unit half-circles
    centres = torch.tensor([[-0.5, -0.25], [0.5, 0.25]])
    radius = (x - centres[y]).norm(dim=1)
    torch.testing.assert_close(radius, torch.ones(2000))


def test_sabma_learns_and_bma_beats_the_mean_predictor_on_nll() -> None:
    cfg = replace(MoonsConfig(), epochs=120, beta=1.0)
    results = run_moons(seed=0, cfg=cfg)
    assert results["sabma_bma"]["acc"] > 0.8
    assert results["sabma_bma"]["nll"] < results["sabma_mean"]["nll"]
    assert results["sabma_bma"]["nll"] < 0.5
