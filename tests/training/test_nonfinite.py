"""A NaN/Inf loss skips its step (θ untouched); a run of them stops with the checkpoint intact."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from sabma import GaussianPosterior, LowRankGaussian
from sabma.config import config_from_dict
from sabma.data.tasks import TrainData
from sabma.models.tiny import TinyCNN
from sabma.runs.checkpoint import load_checkpoint
from sabma.training import Checkpointing, fit


def _problem(nan_rows: slice) -> tuple[GaussianPosterior, TrainData]:
    torch.manual_seed(0)
    x, y = torch.randn(40, 3, 8, 8), torch.arange(40) % 4
    x[nan_rows] = float("nan")
    posterior = GaussianPosterior(TinyCNN(4), "norm+head", rank=1, init_std=0.01)
    return posterior, TrainData(x, y, torch.randn(8, 3, 8, 8), torch.arange(8) % 4)


def _prior(posterior: GaussianPosterior) -> LowRankGaussian:
    mean = posterior.mean.detach().clone()
    return LowRankGaussian(mean, torch.ones_like(mean), mean.new_zeros(mean.numel(), 0))


@pytest.mark.parametrize("method", ["sabma", "sgd", "vi", "bsam"])
def test_a_nan_batch_is_skipped_and_training_goes_on(
    method: str, caplog: pytest.LogCaptureFixture
) -> None:
    posterior, data = _problem(slice(0, 1))  # one image: one batch of each epoch
    cfg = config_from_dict(
        {},
        [f"method.name={method}", "optim.epochs=3", "optim.batch_size=10", "eval.val_samples=2"],
    )
    with caplog.at_level(logging.WARNING):
        history = fit(posterior, data, cfg, _prior(posterior), progress=False)
    assert [e["skipped_steps"] for e in history] == [1, 1, 1]
    assert "non-finite loss at epoch 1" in caplog.text
    assert all(bool(torch.isfinite(p).all()) for p in posterior.parameters())


def test_a_run_of_nan_losses_stops_with_the_last_checkpoint_intact(tmp_path: Path) -> None:
    posterior, data = _problem(slice(0, 40))  # every batch
    start = posterior.mean.detach().clone()
    path = tmp_path / "checkpoint.safetensors"
    with pytest.raises(
        FloatingPointError,
        match=r"5 non-finite losses in a row at epoch 1; the last good checkpoint is .*, but a "
        r"resumed run keeps its settings: start a new run",
    ):
        _diverge(posterior, data, Checkpointing(path, 2))
    state = load_checkpoint(path)
    assert state["steps"] == 4  # the last checkpoint before the stop
    assert torch.equal(state["posterior"]["mean"], start)  # skipped steps left θ untouched
    assert torch.equal(posterior.mean.detach(), start)


def test_divergence_before_any_checkpoint_says_to_start_again(tmp_path: Path) -> None:
    posterior, data = _problem(slice(0, 40))
    with pytest.raises(FloatingPointError, match=r"no checkpoint was written yet: start again"):
        _diverge(posterior, data, Checkpointing(tmp_path / "checkpoint.safetensors", 50))


def _diverge(posterior, data, checkpoint: Checkpointing) -> None:
    cfg = config_from_dict({}, ["optim.epochs=2", "optim.batch_size=5"])
    fit(posterior, data, cfg, _prior(posterior), progress=False, checkpoint=checkpoint)
