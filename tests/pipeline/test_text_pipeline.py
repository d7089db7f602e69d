"""The text pipeline end to end on a tiny randomly initialised BERT and generated CSV files:
train, evaluate with text corruptions, curvature, flatness, Laplace, a benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sabma.cli.main import main
from sabma.config import config_from_dict
from sabma.data.tasks import load_task
from sabma.pipeline.evaluate import load_run
from sabma.shift.text import TEXT_CORRUPTIONS
from tests.data.helpers import write_sentiment_csv, write_tiny_text_encoder

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def text_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("text")
    return {
        "encoder": write_tiny_text_encoder(root / "encoder"),
        "train": write_sentiment_csv(root / "train.csv", 120, seed=0),
        "test": write_sentiment_csv(root / "test.csv", 60, seed=1),
    }


def text_overrides(files: dict[str, Path], *extra: str) -> list[str]:
    overrides = [
        f"model.backbone=hf:{files['encoder']}",
        "data.dataset=csv",
        f"data.root={files['train']}",
        f"data.test_file={files['test']}",
        "data.text_column=review",
        "data.label_column=mood",
        "data.shots=10",
        "data.val_shots=10",
        "data.test_size=0",
        "optim.epochs=20",
        "optim.batch_size=10",
        "optim.lr=0.1",
        "init.head_std=0.1",
        "eval.eval_every=5",
        "eval.samples=4",
        "eval.val_samples=2",
        "method.sabma.rank=2",
        "method.swag.rank=2",
        *extra,
    ]
    return [arg for o in overrides for arg in ("--set", o)]


def test_a_csv_text_task_is_split_and_tokenised(text_files: dict[str, Path]) -> None:
    cfg = config_from_dict({}, text_overrides(text_files)[1::2])
    task = load_task(cfg, seed=0)
    assert task.kind == "text" and task.classes == ("neg", "pos")
    assert sorted(torch.bincount(task.y_train).tolist()) == [10, 10]
    assert len(task.y_val) == 20 and len(task.y_test) == 60 and len(task.x_test_raw) == 60
    assert set(task.x_train) == {"input_ids", "token_type_ids", "attention_mask"}
    ids = task.x_test["input_ids"]
    assert ids.shape[0] == 60 and int(task.x_test["attention_mask"].sum(1).max()) == ids.shape[1]
    # corrupted raw texts are prepared exactly like the clean ones
    prepared = task.prepare(task.x_test_raw)
    assert all(torch.equal(prepared[k], task.x_test[k]) for k in prepared)
    other = load_task(cfg, seed=1)
    assert not torch.equal(other.x_train["input_ids"], task.x_train["input_ids"])


def test_train_evaluate_shift_and_curvature_of_a_text_run(
    tmp_path: Path, text_files: dict[str, Path]
) -> None:
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--no-progress", *text_overrides(text_files)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset"] == "csv" and metrics["backbone"].startswith("hf:")
    # the cue words are learnable from 10 shots through LayerNorms + head of a random encoder
    assert metrics["test"]["bma"]["acc"] >= 0.75, metrics["test"]
    loaded = load_run(run)
    layer_norms = sum(isinstance(m, torch.nn.LayerNorm) for m in loaded.posterior.model.modules())
    assert len(loaded.posterior.names) == 2 * layer_norms + 2 and layer_norms == 5
    assert loaded.head == "classifier"

    assert main(["evaluate", str(run), "--shift", "--severities", "1,5", "--no-progress"]) == 0
    shift = json.loads((run / "metrics.json").read_text())["shift"]
    assert shift["corruptions"] == list(TEXT_CORRUPTIONS) and shift["size"] == 60
    # the clean set is the whole test split again, with its own posterior draws
    assert shift["clean"]["acc"] == pytest.approx(metrics["test"]["bma"]["acc"], abs=0.1)
    dropped = shift["per_corruption"]["word_drop"]
    assert dropped["5"]["nll"] != dropped["1"]["nll"]  # the inputs really changed
    code = main(["evaluate", str(run), "--shift", "--corruptions", "fog", "--no-progress"])
    assert code == 2  # an image corruption on a text run: refused

    ood = ["--ood", "near", "--ood", "far", "--ood-size", "20", "--no-progress"]
    assert main(["evaluate", str(run), *ood]) == 0
    section = json.loads((run / "metrics.json").read_text())["ood"]
    assert section["sets"] == {
        "near": {"source": "Rotten Tomatoes plot synopses", "size": 20},
        "far": {"source": "Python standard-library docstrings", "size": 20},
    }
    assert set(section["bma"]["raw"]["far"]) == {"msp", "entropy", "energy", "mi"}
    assert main(["evaluate", str(run), "--ood", "digits", "--no-progress"]) == 2  # images

    sharp = ["sharpness", str(run), "--samples", "2", "--top-k", "1", "--probes", "2"]
    assert main([*sharp, "--no-progress"]) == 0
    sharpness = json.loads((run / "metrics.json").read_text())["sharpness"]
    assert sharpness["lambda_max"] > 0
    assert main(["analyze", "flatness", str(run), "--samples", "3", "--no-progress"]) == 0
    assert (run / "flatness.json").is_file()
    landscape = ["analyze", "landscape", str(run), "--points", "3", "--grid", "3"]
    assert main([*landscape, "--no-progress"]) == 0 and (run / "landscape.json").is_file()


@pytest.mark.parametrize("method", ["laplace", "mcdropout", "swag"])
def test_baselines_take_text_inputs(
    tmp_path: Path, text_files: dict[str, Path], method: str
) -> None:
    out = tmp_path / method
    extra = text_overrides(text_files, "optim.epochs=6", "method.swag.start=3")
    assert (
        main(
            ["train", "--out", str(out), "--no-progress", *extra, "--set", f"method.name={method}"]
        )
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["test"]["bma"]["ece"] <= 1 and metrics["test"]["bma"]["nll"] > 0


@pytest.mark.parametrize("method", ["sabma", "sgd", "ivon"])
def test_lora_adapters_carry_the_posterior(
    tmp_path: Path, text_files: dict[str, Path], method: str
) -> None:
    """model.subset=lora: peft's adapters on query/value + the head are the Bayesian subset of
    every method, through the same loop; B leaves 0."""
    pytest.importorskip("peft")
    out = tmp_path / method
    extra = text_overrides(
        text_files,
        "model.subset=lora",
        "model.lora.rank=2",
        "optim.epochs=6",
        f"method.name={method}",
    )
    assert main(["train", "--out", str(out), "--no-progress", *extra]) == 0
    names = json.loads((out / "posterior.json").read_text())["names"]
    assert {n.split(".")[-3] for n in names if "lora_" in n} == {"lora_A", "lora_B"}
    assert names[-2:] == ["classifier.weight", "classifier.bias"]
    assert all("lora_" in n or n.startswith("classifier.") for n in names)
    run = load_run(out)
    lora_b = [
        t for n, t in run.posterior.unflatten(run.posterior.mean.detach()).items() if "lora_B" in n
    ]
    assert max(float(t.abs().max()) for t in lora_b) > 0  # trained away from B = 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 < metrics["test"]["bma"]["nll"] < 5


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model.backbone=efficientnet_lite0"], "holds texts: model.backbone must be a text"),
        (["data.augment=true"], "data.augment applies to images only"),
        (["data.label_column=nope"], "no column(s) ['nope']"),
        (["data.max_tokens=1"], "data.max_tokens must be >= 2"),
        (
            ["model.subset=lora", "model.lora.targets=[qkv]"],
            "the LoRA targets ['qkv'] match no module of TextClassifier",
        ),
        (["model.subset=lora", "model.lora.rank=0"], "LoRA needs model.lora.rank >= 1"),
    ],
)
def test_bad_text_settings_are_one_line_and_write_nothing(
    tmp_path: Path,
    text_files: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    overrides: list[str],
    expected: str,
) -> None:
    extra = [arg for o in overrides for arg in ("--set", o)]
    out = tmp_path / "run"
    assert (
        main(["train", "--out", str(out), "--no-progress", *text_overrides(text_files), *extra])
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err, err
    assert not out.exists()


def test_an_image_dataset_with_a_text_backbone_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["train", "--out", "/tmp/never", "--set", "model.backbone=minilm"]) == 2
    assert "reads texts: data.dataset must be one of the text datasets" in capsys.readouterr().err


def test_the_text_demo_runs_sabma_sgd_and_the_probe(
    tmp_path: Path, text_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    demo = ["demo", "--task", "text", "--quick", "--out", str(tmp_path), "--no-progress"]
    extra = text_overrides(text_files, "data.text_column=review", "optim.epochs=4")
    assert main([*demo, *extra]) == 0
    table = capsys.readouterr().out
    assert f"10-shot csv (≤ 64 tokens) from hf:{text_files['encoder']}" in table
    for row in ("SA-BMA (BMA)", "SGD", "linear probe (frozen features)"):
        assert f"| {row} |" in table
    rows = json.loads((tmp_path / "demo.json").read_text())
    assert len(rows["linear probe (frozen features)"]) == 1
    assert {p.name for p in tmp_path.iterdir()} == {"sabma-seed0", "sgd-seed0", "demo.json"}
