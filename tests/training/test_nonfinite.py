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
        match=r"5 non-finite losses in a row at epoch 1; `sabma train --out .* --resume --set "
        r"optim.lr=0.0001` continues from the last checkpoint at a lower learning rate",
    ):
        _diverge(posterior, data, Checkpointing(path, 2))
    state = load_checkpoint(path)
    assert state["steps"] == 4  # the last checkpoint before the stop
    assert torch.equal(state["posterior"]["mean"], start)  # skipped steps left θ untouched
    assert torch.equal(posterior.mean.detach(), start)


def test_divergence_before_any_checkpoint_says_to_start_again(tmp_path: Path) -> None:
    posterior, data = _problem(slice(0, 40))
    with pytest.raises(
        FloatingPointError,
        match=r"no checkpoint was written yet, and nothing of this run was kept: start again",
    ):
        _diverge(posterior, data, Checkpointing(tmp_path / "checkpoint.safetensors", 50))


def _diverge(posterior, data, checkpoint: Checkpointing) -> None:
    cfg = config_from_dict({}, ["optim.epochs=2", "optim.batch_size=5"])
    fit(posterior, data, cfg, _prior(posterior), progress=False, checkpoint=checkpoint)


def test_divergence_advice_can_be_followed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`sabma train` at a diverging rate: before any checkpoint nothing is left behind; after
    one, the printed `--resume --set optim.lr=…` command finishes the run."""
    from sabma.cli.main import main
    from tests.data.helpers import write_fake_fashion_mnist
    from tests.pipeline.test_pipeline import TINY

    root = tmp_path / "data"
    root.mkdir()
    write_fake_fashion_mnist(root)

    def train(out: Path, *extra: str) -> tuple[int, str]:
        overrides = [*TINY, f"data.root={root}", "method.name=sgd", *extra]
        args = [a for o in overrides for a in ("--set", o)]
        status = main(["train", "--no-progress", "--out", str(out), *args])
        return status, capsys.readouterr().err

    status, err = train(tmp_path / "early", "optim.lr=1000")
    assert status == 2 and "nothing of this run was kept" in err
    assert not (tmp_path / "early").exists()
    status, err = train(tmp_path / "late", "optim.lr=1000", "optim.checkpoint_every=1")
    assert status == 2 and (tmp_path / "late" / "checkpoint.safetensors").is_file()
    command = err.split("`")[1].split()
    assert command[:2] == ["sabma", "train"] and command[-3:] == [
        "--resume",
        "--set",
        "optim.lr=100",
    ]
    # the checkpoint holds the weights of the diverging run (lr 1000), so the resume at the
    # advised rate is accepted (not refused as another configuration) and ends either way
    status, err = main([*command[1:], "--no-progress"]), capsys.readouterr().err
    assert "lr: 100.0" in (tmp_path / "late" / "config.yaml").read_text()
    assert "differs" not in err
    assert status == 0 or (status == 2 and "lower optim.lr" in err), err
