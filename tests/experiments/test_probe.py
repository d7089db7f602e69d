"""The frozen-feature linear probe: fitted on training features, λ and temperature on validation."""

from __future__ import annotations

import torch
from torch import nn

from sabma.experiments.probe import linear_probe
from sabma.metrics import classification_metrics


def test_the_probe_separates_features_and_reports_a_temperature_scaled_test() -> None:
    gen = torch.Generator().manual_seed(0)
    centres = 2.0 * torch.randn(3, 5, generator=gen)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % 3
        return centres[y] + torch.randn(n, 5, generator=gen), y

    model = nn.Sequential(nn.Identity(), nn.Linear(5, 3))  # the head's input: the raw features
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = split(30), split(60), split(300)
    out = linear_probe(model, "1", x_tr, y_tr, x_va, y_va, x_te, y_te, 3)
    assert out["test"]["acc"] > 0.8  # type: ignore[index]
    assert out["temperature"] != 1.0
    # scaling keeps the argmax, changes the confidence
    assert out["test_ts"]["acc"] == out["test"]["acc"]  # type: ignore[index]
    assert out["test_ts"]["nll"] != out["test"]["nll"]  # type: ignore[index]
    uniform = classification_metrics(torch.full((300, 3), 1 / 3), y_te)
    assert out["test_ts"]["nll"] < uniform["nll"]  # type: ignore[index]
