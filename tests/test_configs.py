"""The paper's settings under configs/ run as they are, on tiny stand-ins of what needs a download:
random weights instead of ``pretrained``, a few CIFAR-format images written here, small sizes;
then the corrupted-test-set evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sabma.cli.main import main
from sabma.config.io import load_config
from tests.data.helpers import write_fake_cifar

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
#: what the stand-in changes: nothing is downloaded, the data are tiny, one short epoch
STAND_IN = [
    "model.pretrained=false",
    "data.shots=1",
    "data.val_shots=1",
    "data.test_size=20",
    "data.resolution=32",
    "optim.epochs=1",
    "optim.batch_size=10",
    "optim.lr_grid=[]",
    "eval.samples=2",
    "eval.val_samples=2",
]
#: architectures too large for a CPU test get their family's tiny test model (random weights)
TINY_ARCHITECTURE = {
    "timm:vit_base_patch16_224": ["model.backbone=timm:test_vit", "data.resolution=160"]
}


def test_every_config_names_the_paper_settings() -> None:
    assert {c.name for c in CONFIGS} >= {
        "cifar10_resnet18.yaml",
        "cifar100_resnet18.yaml",
        "cifar10_vit_b16.yaml",
    }
    for path in CONFIGS:
        cfg = load_config(path)
        assert cfg.data.dataset in ("cifar10", "cifar100") and cfg.data.shots == 10
        assert cfg.model.pretrained and cfg.model.subset == "norm+head"
        assert cfg.data.test_size == 0 and cfg.optim.lr_grid


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_runs_on_a_tiny_stand_in(tmp_path: Path, path: Path) -> None:
    pytest.importorskip("timm")
    cfg = load_config(path)
    folder = write_fake_cifar(tmp_path / "data", fine=cfg.data.dataset == "cifar100")
    overrides = [
        f"data.root={folder}",
        *STAND_IN,
        *TINY_ARCHITECTURE.get(cfg.model.backbone, []),
    ]
    out = tmp_path / "run"
    args = ["train", "--config", str(path), "--out", str(out), "--no-progress"]
    assert main([*args, *(a for o in overrides for a in ("--set", o))]) == 0
    evaluate = ["evaluate", str(out), "--shift", "--severities", "3"]
    assert main([*evaluate, "--corruptions", "gaussian_noise", "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == cfg.data.dataset and "shift" in metrics
