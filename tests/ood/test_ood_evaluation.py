"""`sabma evaluate --ood`: the sections, the presets, one clear line for a set that cannot be
used (nothing written), and a resume after a crash that equals an uninterrupted evaluation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sabma.cli.main import main
from sabma.pipeline.train import train_run
from sabma.runs.progress import SetProgress
from tests.pipeline.test_pipeline import data_root, tiny_config  # noqa: F401 (fixture)

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def five_class_run(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:  # noqa: F811
    run = tmp_path_factory.mktemp("ood") / "run"
    train_run(tiny_config(data_root, "data.classes=[0,1,2,3,4]"), run, progress=False)
    return run


def _evaluate(run: Path, *specs: str) -> int:
    args = [a for spec in specs for a in ("--ood", spec)]
    return main(["evaluate", str(run), *args, "--ood-size", "30", "--no-progress"])


def test_near_and_far_sections_and_figures(five_class_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(five_class_run, run)
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["selective"]) == {"bma", "mean"}  # every evaluation: selective
    assert set(metrics["selective"]["bma"]) == {"raw", "ts"}
    assert (run / "risk_coverage.png").is_file()
    assert _evaluate(run, "near", "far") == 0
    section = json.loads((run / "metrics.json").read_text())["ood"]
    assert section["sets"]["near"] == {"source": "the other 5 classes of fashion_mnist", "size": 30}
    assert section["sets"]["far"]["source"].startswith("scikit-learn's handwritten digits")
    assert section["test_size"] == 40 and section["samples"] == 4
    bma = section["bma"]
    assert set(bma) == {"raw", "ts"} and set(bma["raw"]) == {"near", "far"}
    assert set(bma["raw"]["near"]) == {"msp", "entropy", "energy", "mi"}
    assert set(section["at_mean"]["raw"]["far"]) == {"msp", "entropy", "energy"}  # no draws
    for m in bma["raw"]["far"].values():
        assert 0 <= m["auroc"] <= 1 and 0 <= m["fpr95"] <= 1
    assert (run / "ood.png").is_file() and not (run / "ood.partial.json").exists()
    report = (run / "report.md").read_text()
    assert "## Out-of-distribution detection" in report and "## Selective prediction" in report
    # a re-evaluation without --ood keeps the section
    assert main(["evaluate", str(run), "--no-progress"]) == 0
    assert "ood" in json.loads((run / "metrics.json").read_text())


def _rgb_npz(path: Path) -> Path:
    np.savez(path, x=np.zeros((4, 8, 8, 3), dtype=np.uint8))
    return path


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (lambda t: str(_rgb_npz(t / "rgb.npz")), "holds colour (n, H, W, 3) images (4, 8, 8, 3)"),
        (
            lambda t: (
                np.savez(t / "flat.npz", x=np.zeros((4, 64), np.uint8)),
                str(t / "flat.npz"),
            )[1],
            "images must be (n, H, W) or (n, H, W, 3), got (4, 64)",
        ),
        (lambda t: ((t / "empty").mkdir(), str(t / "empty"))[1], "holds no items"),
        (lambda t: "docstrings", "holds texts, but the run reads images"),
        (lambda t: "classes:0", "classes [0] are in the run's training classes"),
        (lambda t: str(t / "missing.npz"), "neither a preset"),
    ],
)
def test_a_set_that_cannot_be_used_is_one_line_and_writes_nothing(
    five_class_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    spec,
    message: str,
) -> None:
    before = {p.name: p.read_bytes() for p in five_class_run.iterdir() if p.name != ".lock"}
    assert _evaluate(five_class_run, "far", spec(tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err
    after = {p.name: p.read_bytes() for p in five_class_run.iterdir() if p.name != ".lock"}
    assert after == before


def test_near_needs_a_run_trained_on_a_class_subset(
    tmp_path: Path,
    data_root: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = tmp_path / "all"
    train_run(tiny_config(data_root, "optim.epochs=1"), run, progress=False)
    assert _evaluate(run, "near") == 2
    assert "this run was trained on all of them" in capsys.readouterr().err


def test_a_crashed_ood_evaluation_resumes_to_the_same_section(
    five_class_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole, part = tmp_path / "whole", tmp_path / "part"
    shutil.copytree(five_class_run, whole)
    shutil.copytree(five_class_run, part)
    assert _evaluate(whole, "near", "far") == 0
    saves = {"n": 0}
    original = SetProgress.save

    def crash_after_two(self: SetProgress, settings, sets) -> None:  # type: ignore[no-untyped-def]
        original(self, settings, sets)
        saves["n"] += 1
        if saves["n"] == 2:  # the test split and "near" are saved
            raise KeyboardInterrupt

    monkeypatch.setattr(SetProgress, "save", crash_after_two)
    assert _evaluate(part, "near", "far") == 130
    saved = json.loads((part / "ood.partial.json").read_text())["sets"]
    assert set(saved) == {"test", "near"}
    monkeypatch.undo()
    scored: list[str] = []
    monkeypatch.setattr(
        SetProgress,
        "save",
        lambda self, s, sets: (scored.append(list(sets)[-1]), original(self, s, sets)),
    )
    assert _evaluate(part, "near", "far") == 0
    assert scored == ["far"]  # only the set that was not finished
    got = json.loads((part / "metrics.json").read_text())["ood"]
    want = json.loads((whole / "metrics.json").read_text())["ood"]
    assert got == want
    assert not (part / "ood.partial.json").exists()
