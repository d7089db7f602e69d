"""Run-directory files: atomic writes, posterior round trips, reliability bins."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from sabma import GaussianPosterior
from sabma.models.tiny import TinyCNN
from sabma.runs.files import atomic_write_json, load_posterior, save_posterior
from sabma.runs.report import reliability_bins


def test_atomic_write_replaces_whole_files_and_leaves_no_temporaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "deep" / "m.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"b": 2})
    assert json.loads(target.read_text()) == {"b": 2}
    assert [p.name for p in target.parent.iterdir()] == ["m.json"]
    monkeypatch.setattr(os, "fsync", _fail)  # the disk fails after the bytes were written
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(target, {"c": 3})
    assert json.loads(target.read_text()) == {"b": 2}  # the old file survives, whole
    assert [p.name for p in target.parent.iterdir()] == ["m.json"]


def _fail(_fd: int) -> None:
    raise OSError("disk full")


def test_posterior_and_running_statistics_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinyCNN(3)
    posterior = GaussianPosterior(model, rank=2, head="fc")
    with torch.no_grad():
        posterior.factor.normal_()
        model.features[1].running_mean.add_(1.5)
    save_posterior(tmp_path / "p.safetensors", posterior, {"method": "sabma"})
    torch.manual_seed(0)
    fresh_model = TinyCNN(3)
    fresh = GaussianPosterior(fresh_model, rank=2, head="fc")
    meta = load_posterior(tmp_path / "p.safetensors", fresh)
    assert meta["method"] == "sabma" and meta["dim"] == posterior.dim
    for key, value in posterior.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)
    assert torch.equal(fresh_model.features[1].running_mean, model.features[1].running_mean)
    with pytest.raises(FileNotFoundError):
        load_posterior(tmp_path / "none.safetensors", fresh)


def test_reliability_bins_count_every_point() -> None:
    probs = torch.tensor([[1.0, 0.0], [0.55, 0.45], [0.2, 0.8]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1])
    bins = reliability_bins(probs, labels, bins=10)
    assert sum(bins["count"]) == 3
    assert bins["count"][9] == 1 and bins["accuracy"][9] == 1.0
    assert bins["count"][5] == 1 and bins["accuracy"][5] == 0.0
    assert bins["count"][7] == 1 and bins["confidence"][7] == pytest.approx(0.8)
