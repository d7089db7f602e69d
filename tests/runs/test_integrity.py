"""Damaged run files are named, with what to do: a hash recorded with the tensors, a schema for
the JSON; a damaged metrics.json is rebuilt by evaluate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from sabma.pipeline.evaluate import evaluate_run
from sabma.pipeline.train import train_run
from sabma.runs.checkpoint import load_checkpoint, save_checkpoint
from tests.pipeline.test_pipeline import data_root, tiny_config  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("runs") / "run"
    train_run(tiny_config(data_root), out, progress=False)
    return out


def copy_of(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


def test_a_damaged_posterior_is_named(finished: Path, tmp_path: Path) -> None:
    run = copy_of(finished, tmp_path)
    tensors = run / "posterior.safetensors"
    data = bytearray(tensors.read_bytes())
    data[-200:-100] = bytes(100)  # overwritten inside the tensor data, same size
    tensors.write_bytes(bytes(data))
    with pytest.raises(
        ValueError,
        match=r"posterior\.safetensors is damaged \(its tensors do not "
        r"match the hash written with them\); retrain the run",
    ):
        evaluate_run(run, progress=False)
    tensors.write_bytes(bytes(data[:100]))  # truncated
    with pytest.raises(ValueError, match=r"posterior\.safetensors is damaged \(.*\); retrain"):
        evaluate_run(run, progress=False)
    (run / "posterior.json").write_text("[1, 2, 3]")
    with pytest.raises(ValueError, match=r"posterior\.json is damaged \(not the expected JSON"):
        evaluate_run(run, progress=False)
    (run / "posterior.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"posterior\.json is damaged \(Expecting"):
        evaluate_run(run, progress=False)


def test_a_damaged_metrics_file_is_rebuilt_by_evaluate(finished: Path, tmp_path: Path) -> None:
    run = copy_of(finished, tmp_path)
    want = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps(want)[:40])  # truncated
    from sabma.runs.folder import read_metrics

    with pytest.raises(
        ValueError, match=r"metrics\.json is damaged .*`sabma evaluate .*` writes it"
    ):
        read_metrics(run)
    metrics = evaluate_run(run, progress=False)
    assert metrics["test"] == want["test"]  # the same posterior and draws: the same figures
    assert json.loads((run / "metrics.json").read_text())["test"] == want["test"]


def test_a_damaged_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.safetensors"
    save_checkpoint(path, {"theta": torch.randn(1000), "step": 3})
    data = bytearray(path.read_bytes())
    data[-1500:-500] = bytes(1000)  # 1,000 bytes of tensor data overwritten
    path.write_bytes(bytes(data))
    with pytest.raises(
        ValueError,
        match=r"is damaged \(its tensors do not match the hash written "
        r"with them\); delete it to restart",
    ):
        load_checkpoint(path)
