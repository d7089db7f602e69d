"""A short train + evaluate on the tiny CNN: the run directory and its metrics.json contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from sabma.config import config_from_dict
from sabma.methods import get_method
from sabma.pipeline.build import build_posterior
from sabma.pipeline.evaluate import evaluate_run
from sabma.pipeline.train import train_run
from sabma.runs.files import load_posterior
from tests.data.helpers import write_fake_fashion_mnist

TINY = [
    "model.backbone=tiny_cnn",
    "data.shots=5",
    "data.val_shots=5",
    "data.test_size=40",
    "data.resolution=16",
    "optim.epochs=4",
    "optim.batch_size=10",
    "optim.lr=0.05",
    "eval.eval_every=2",
    "eval.samples=4",
    "eval.val_samples=2",
    "method.sabma.rank=2",
    "method.swag.rank=2",
    "method.fswag.rank=2",
    "prior.norm_std=0.1",  # the prior's pull on the mean stays stable at lr 0.05 with N = 50
]
METRIC_KEYS = {"acc", "nll", "ece", "brier"}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fmnist")
    write_fake_fashion_mnist(root)
    return root


def tiny_config(root: Path, *extra: str):
    return config_from_dict({}, [*TINY, f"data.root={root}", *extra])


def write_ptl_prior(folder: Path, data_root: Path, mean: float, variance: float) -> None:
    """A PTL-layout prior ``folder/p_{mean,variance,covmat}.pt`` over the tiny network's
    parameters off the head: constant mean and variance, a random rank-3 covariance factor."""
    model = build_posterior(tiny_config(data_root), 10)[0].model
    total = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("fc."))
    torch.save(torch.full((total,), mean), folder / "p_mean.pt")
    torch.save(torch.full((total,), variance), folder / "p_variance.pt")
    torch.save(0.01 * torch.randn(3, total), folder / "p_covmat.pt")


@pytest.mark.parametrize("method", ["sabma", "sgd"])
def test_train_writes_a_complete_run_directory(
    tmp_path: Path, data_root: Path, method: str
) -> None:
    out = tmp_path / "run"
    metrics = train_run(tiny_config(data_root, f"method.name={method}"), out, progress=False)
    for name in (
        "config.yaml",
        "metrics.json",
        "report.md",
        "reliability.png",
        "posterior.safetensors",
        "posterior.json",
        "train_log.jsonl",
    ):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert {
        "method",
        "seed",
        "dataset",
        "shots",
        "backbone",
        "subset",
        "samples",
        "test",
        "val",
        "timing",
    } <= set(saved)
    assert saved["method"] == method and saved["shots"] == 5 and saved["backbone"] == "tiny_cnn"
    # raw and temperature-scaled test metrics side by side (eval.temperature_scaling, on)
    # (the posterior mean is scaled on its own validation predictive where it differs)
    point = get_method(method).point
    assert set(saved["test"]) == {"bma", "mean", "bma_ts", *(() if point else ("mean_ts",))}
    assert set(saved["test"]["bma"]) == METRIC_KEYS and saved["temperature"] > 0
    assert set(saved["timing"]) == {"train_s", "eval_s"}
    assert saved["samples"] == (4 if method == "sabma" else 1)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [1, 2, 3, 4] and "val_nll" in log[1]
    assert yaml.safe_load((out / "config.yaml").read_text())["method"]["name"] == method
    assert "![reliability diagram](reliability.png)" in (out / "report.md").read_text()
    with pytest.raises(ValueError, match="already holds a finished run"):
        train_run(tiny_config(data_root), out, progress=False)


def test_the_tiny_cnn_learns_the_fake_task(tmp_path: Path, data_root: Path) -> None:
    """A randomly initialised CNN needs batch statistics (its running statistics are 0 and 1)."""
    cfg = tiny_config(
        data_root,
        "optim.epochs=30",
        "eval.eval_every=10",
        "optim.lr=0.5",
        "init.head_std=0.01",
        "model.bn_mode=train",
    )
    metrics = train_run(cfg, tmp_path / "run", progress=False)
    assert metrics["test"]["bma"]["acc"] > 0.5  # chance is 0.1


def test_an_unstable_learning_rate_for_the_kl_term_is_refused(
    tmp_path: Path, data_root: Path
) -> None:
    cfg = tiny_config(data_root, "optim.lr=0.5", "prior.norm_std=0.01", "method.variance.beta=0.1")
    with pytest.raises(ValueError, match="unstable for the prior term"):
        train_run(cfg, tmp_path / "run", progress=False)


def test_posterior_loads_back_and_evaluate_reproduces(tmp_path: Path, data_root: Path) -> None:
    cfg = tiny_config(data_root)
    out = tmp_path / "run"
    metrics = train_run(cfg, out, progress=False)
    posterior, _ = build_posterior(cfg, 10)
    meta = load_posterior(out / "posterior.safetensors", posterior)
    assert meta["rank"] == 2 and meta["names"] == posterior.names
    again = evaluate_run(out, progress=False)
    assert again["test"] == metrics["test"]
    raw = evaluate_run(out, samples=2, temperature_scaling=False, progress=False)
    assert raw["samples"] == 2 and "temperature" not in raw
    assert set(raw["test"]) == {"bma", "mean"}
    other = build_posterior(tiny_config(data_root, "model.subset=head"), 10)[0]
    with pytest.raises(ValueError, match="another subset"):
        load_posterior(out / "posterior.safetensors", other)


@pytest.mark.parametrize("kind", ["swag", "file"])
def test_other_prior_kinds_run_end_to_end(tmp_path: Path, data_root: Path, kind: str) -> None:
    extra = [
        "prior.swag.epochs=3",
        "prior.swag.start=1",
        "prior.swag.rank=3",
        "method.variance.beta=1",
        "prior.var_floor=0.01",
    ]
    if kind == "file":
        write_ptl_prior(tmp_path, data_root, mean=0.0, variance=1e-4)
        extra = [f"prior.file_path={tmp_path}", "prior.file_name=p", "prior.scale=10"]
    metrics = train_run(
        tiny_config(data_root, f"prior.kind={kind}", *extra), tmp_path / "run", progress=False
    )
    assert metrics["test"]["bma"]["nll"] > 0


def test_model_selection_keeps_the_state_with_the_best_validation_nll(data_root: Path) -> None:
    from sabma.data.tasks import load_task
    from sabma.training import fit
    from sabma.training.selection import val_nll

    # a learning rate high enough that validation NLL is not monotone
    cfg = tiny_config(
        data_root,
        "method.name=sgd",
        "optim.lr=1.0",
        "optim.epochs=30",
        "eval.eval_every=1",
        "model.bn_mode=train",
    )
    task = load_task(cfg, cfg.seed)
    data = task.train_data()
    posterior, _ = build_posterior(cfg, 10)
    history = fit(posterior, data, cfg, prior=None, progress=False)
    val = [e["val_nll"] for e in history]
    assert min(val) < val[-1]  # the best state is not simply the last one
    assert val_nll(posterior, data, cfg, point=True) == pytest.approx(min(val), rel=1e-6)


def test_a_timm_backbone_trains_offline(tmp_path: Path, data_root: Path) -> None:
    """``model.backbone=timm:<name>`` without weights: the architecture, random, trained and
    evaluated like any backbone (its norm layers + head found by type and by timm's accessor)."""
    pytest.importorskip("timm")
    out = tmp_path / "run"
    metrics = train_run(
        tiny_config(data_root, "model.backbone=timm:test_resnet", "optim.epochs=2"),
        out,
        progress=False,
    )
    assert metrics["backbone"] == "timm:test_resnet" and (out / "posterior.safetensors").is_file()
    names = json.loads((out / "posterior.json").read_text())["names"]
    assert "fc.weight" in names and any(".bn" in n or "conv1.1." in n for n in names)
