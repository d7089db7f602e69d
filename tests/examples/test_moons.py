"""Learning: SA-BMA fits two moons through the trainer's own loop and defaults."""

from __future__ import annotations

import torch

import sabma.examples.moons as moons
from sabma.examples.moons import MoonsConfig, make_moons, run_moons


def test_moons_are_two_balanced_separable_classes() -> None:
    x, y = make_moons(2000, 0.0, torch.Generator().manual_seed(0))
    assert x.shape == (2000, 2) and set(y.tolist()) == {0, 1}
    assert 0.45 < float(y.double().mean()) < 0.55
    # noise-free points lie on their unit half-circles
    centres = torch.tensor([[-0.5, -0.25], [0.5, 0.25]])
    radius = (x - centres[y]).norm(dim=1)
    torch.testing.assert_close(radius, torch.ones(2000))


def test_sabma_learns_moons_with_a_data_shaped_posterior(monkeypatch) -> None:
    """The trainer's fit() and defaults (no loop of the toy's own): SA-BMA reaches SGD's
    accuracy, its BMA is a good predictive, and its σ is shaped by the data (not the uniform
    jitter of the prior)."""
    trained = {}
    original = moons._train

    def keep(name, *args, **kwargs):
        trained[name] = original(name, *args, **kwargs)
        return trained[name]

    monkeypatch.setattr(moons, "_train", keep)
    results = run_moons(seed=0, cfg=MoonsConfig(overrides=("optim.epochs=60",)))
    assert results["sabma_bma"]["acc"] > 0.85
    assert results["sabma_bma"]["nll"] < 0.35
    assert results["sabma_bma"]["acc"] > results["sgd"]["acc"] - 0.03
    std = trained["sabma"].std.detach()
    assert float(std.quantile(0.99) / std.quantile(0.01)) > 2
