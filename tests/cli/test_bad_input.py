"""Bad input: one clear line on stderr, exit status 2, no traceback, nothing half-written."""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sabma.cli.main import main
from sabma.config import Config, config_from_dict
from sabma.data.preprocess import preprocess_images
from sabma.methods import base
from sabma.pipeline.train import train_run
from sabma.runs.folder import CHECKPOINT
from tests.data.helpers import idx_bytes, write_fake_fashion_mnist
from tests.pipeline.test_pipeline import TINY, tiny_config

Setup = Callable[[Path], list[str]]


def _tiny(root: Path, *extra: str) -> list[str]:
    return [arg for o in [*TINY, f"data.root={root}", *extra] for arg in ("--set", o)]


def _data(tmp: Path) -> Path:
    root = tmp / "data"
    write_fake_fashion_mnist(root)
    return root


def _truncated(tmp: Path) -> list[str]:
    root = _data(tmp)
    images = root / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    return _tiny(root)


def _corrupt_gzip(tmp: Path) -> list[str]:
    root = _data(tmp)
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08 this is not gzip data")
    return _tiny(root)


def _labels_out_of_range(tmp: Path) -> list[str]:
    root = _data(tmp)
    labels = np.full(250, 12, dtype=np.uint8)
    (root / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    return _tiny(root)


def _bad_npz(tmp: Path, kind: str) -> list[str]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (40, 8, 8), dtype=np.uint8)
    y = np.arange(40) % 4
    path = tmp / "user.npz"
    if kind == "float":
        np.savez(path, x_train=x / 255.0, y_train=y, x_test=x, y_test=y)
    else:
        np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)
        path.write_bytes(path.read_bytes()[:300])
    return [arg for o in [*TINY, "data.dataset=npz", f"data.root={path}"] for arg in ("--set", o)]


def _killed_run(tmp: Path, name: str, *extra: str) -> Path:
    """A run killed after a few steps (config.yaml and a checkpoint, no metrics.json)."""
    root = tmp / "data"
    if not root.exists():
        write_fake_fashion_mnist(root)
    cfg = tiny_config(root, "optim.checkpoint_every=2", *extra)
    calls = {"n": 0}
    original = base.Method.step

    def crash(self: base.Method, *args: Any) -> float:
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return original(self, *args)

    base.Method.step = crash  # type: ignore[method-assign]
    try:
        with pytest.raises(KeyboardInterrupt):
            train_run(cfg, tmp / name, progress=False)
    finally:
        base.Method.step = original  # type: ignore[method-assign]
    return tmp / name


def _foreign_checkpoint(tmp: Path) -> list[str]:
    other = _killed_run(tmp, "rank2", "method.sabma.rank=2")
    run = _killed_run(tmp, "rank3", "method.sabma.rank=3")
    shutil.copy(other / CHECKPOINT, run / CHECKPOINT)
    return ["--resume"]


def _finished_run(tmp: Path) -> Path:
    root = _data(tmp)
    train_run(tiny_config(root, "optim.epochs=1"), tmp / "done", progress=False)
    return tmp / "done"


def _foreign_posterior(tmp: Path) -> list[str]:
    done = _finished_run(tmp)
    root = tmp / "data"
    other = tmp / "other"
    train_run(tiny_config(root, "optim.epochs=1", "method.sabma.rank=3"), other, progress=False)
    for name in ("posterior.safetensors", "posterior.json"):
        shutil.copy(other / name, done / name)
    return []


# (label, command, setup → extra arguments, expected part of the message)
CASES: list[tuple[str, str, Setup, str]] = [
    ("missing dataset", "train", lambda t: _tiny(t / "nowhere"), "not found in"),
    ("truncated idx", "train", _truncated, "the file is truncated or corrupt"),
    ("corrupt gzip", "train", _corrupt_gzip, "cannot read"),
    ("labels out of range", "train", _labels_out_of_range, "labels in"),
    ("corrupt .npz", "train", lambda t: _bad_npz(t, "corrupt"), "not a readable .npz file"),
    (
        "float (or NaN) .npz images",
        "train",
        lambda t: _bad_npz(t, "float"),
        "train images must be uint8 (0–255), got float64",
    ),
    (
        "more shots than a class has",
        "train",
        lambda t: _tiny(_data(t), "data.shots=30"),
        "fewer than shots + val_shots = 35",
    ),
    (
        "unknown method",
        "train",
        lambda t: _tiny(_data(t), "method.name=nope"),
        "unknown method 'nope'; choose one of ['bsam', 'csgld',",
    ),
    (
        "unknown backbone",
        "train",
        lambda t: _tiny(_data(t), "model.backbone=vgg"),
        "unknown backbone 'vgg'; choose one of ['efficientnet_lite0', 'minilm', 'tiny_cnn', "
        "'tiny_cnn_smooth']",
    ),
    (
        "subset matching nothing",
        "train",
        lambda t: _tiny(_data(t), "model.subset=^nothing"),
        "subset '^nothing' matched no parameters of TinyCNN",
    ),
    (
        "invalid subset",
        "train",
        lambda t: _tiny(_data(t), "model.subset=(norm"),
        "is neither one of ('head', 'norm', 'norm+head', 'lora', 'all') nor a valid regular "
        "expression",
    ),
    (
        "negative seed",
        "train",
        lambda t: _tiny(_data(t), "seed=-1"),
        "seed must be an integer in 0..4294967295, got -1",
    ),
    (
        "20-digit seed",
        "train",
        lambda t: _tiny(_data(t), "seed=12345678901234567890"),
        "seed must be an integer in 0..4294967295, got 12345678901234567890",
    ),
    (
        "negative rank",
        "train",
        lambda t: _tiny(_data(t), "method.sabma.rank=-1"),
        "method.sabma.rank must be >= 0, got -1",
    ),
    (
        "negative rho",
        "train",
        lambda t: _tiny(_data(t), "method.sabma.rho=-0.5"),
        "method.sabma.rho must be >= 0, got -0.5",
    ),
    (
        "S < 1",
        "train",
        lambda t: _tiny(_data(t), "eval.samples=0"),
        "eval.samples must be >= 1, got 0",
    ),
    (
        "zero learning rate",
        "train",
        lambda t: _tiny(_data(t), "optim.lr=0"),
        "optim.lr must be > 0, got 0.0",
    ),
    (
        "NaN learning rate",
        "train",
        lambda t: _tiny(_data(t), "optim.lr=.nan"),
        "optim.lr must be a finite number, got nan",
    ),
    (
        "unknown config key",
        "train",
        lambda t: _tiny(_data(t), "method.nope=1"),
        "unknown config key 'method.nope'; valid keys here:",
    ),
    (
        "malformed override",
        "train",
        lambda t: ["--set", "method.sabma.rank"],
        "override 'method.sabma.rank' is not of the form key.path=value",
    ),
    (
        "unknown device",
        "train",
        lambda t: _tiny(_data(t), "device=tpu9"),
        "device 'tpu9' is not a torch device",
    ),
    ("output under a file", "train", lambda t: _tiny(_data(t)), "is not a folder"),
    (
        "checkpoint of another model",
        "train",
        _foreign_checkpoint,
        "differs from the configuration checkpoint.safetensors was written with "
        "(method.sabma.rank: 2 → 3)",
    ),
    (
        "resume a finished run",
        "train",
        lambda t: [str(_finished_run(t)), "--resume"],
        "holds a finished run; there is nothing to resume",
    ),
    (
        "posterior of another model",
        "evaluate",
        _foreign_posterior,
        "holds a posterior over another subset or rank",
    ),
    (
        "unknown corruption",
        "evaluate",
        lambda t: ["--shift", "--corruptions", "nope"],
        "unknown corruption(s) ['nope']; images: ['gaussian_noise',",
    ),
]


@pytest.mark.parametrize(
    ("label", "command", "setup", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_input_is_one_clear_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    label: str,
    command: str,
    setup: Setup,
    expected: str,
) -> None:
    extra = setup(tmp_path)
    capsys.readouterr()
    if command == "train":
        if "--resume" in extra and extra[0] != "--resume":  # [run, --resume]
            out = Path(extra[0])
            extra = extra[1:]
        elif "--resume" in extra:
            out = tmp_path / "rank3"
        elif label == "output under a file":
            (tmp_path / "file").write_text("")
            out = tmp_path / "file" / "run"
        else:
            out = tmp_path / "out"
        argv = ["train", "--no-progress", "--out", str(out), *extra]
    else:
        run = tmp_path / "done" if (tmp_path / "done").exists() else _finished_run(tmp_path)
        out = tmp_path / "out"
        argv = ["evaluate", str(run), "--no-progress", *extra]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sabma: error: "), err
    assert expected in err, err
    assert "Traceback" not in err
    if command == "train" and "--resume" not in argv:
        assert not out.exists()  # nothing half-written
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert [p for p in after if p not in before] == []


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"method\.sabma\.rank must be >= 0"):
        main(["--debug", "train", "--out", str(tmp_path / "r"), "--set", "method.sabma.rank=-1"])


def test_nan_images_are_refused() -> None:
    images = np.zeros((2, 8, 8), dtype=np.float32)
    images[1, 3, 3] = np.nan
    with pytest.raises(ValueError, match="the images hold NaN or infinite values"):
        preprocess_images(images, 8)
    preprocess_images(np.zeros((2, 8, 8), dtype=np.uint8), 8)


KEYS = [
    "seed",
    "method.sabma.rank",
    "method.sabma.rho",
    "optim.lr",
    "data.shots",
    "method.name",
    "method.sabma.perturb",
    "eval.temperature_scaling",
    "model.weights",
    "method",
    "nope.key",
    "",
]
VALUES = st.one_of(
    st.text(max_size=12),
    st.integers(-5, 5).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["true", "null", "[1, 2]", "{a: 1}", "[mean]", "- x", "'1e-4'", "!!int 3"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=4), st.text(max_size=20))
def test_override_parser_fuzz(pairs: list[tuple[str, str]], junk: str) -> None:
    """Any override list gives a Config or a one-line ValueError — never another exception."""
    overrides = [f"{k}={v}" for k, v in pairs] + ([junk] if junk else [])
    try:
        cfg = config_from_dict({}, overrides)
    except ValueError as err:
        assert "\n" not in str(err)
        return
    assert isinstance(cfg, Config)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10**6), st.floats(1e-8, 10.0), st.sampled_from(["sgd", "sabma", "swag"]))
def test_valid_overrides_round_trip(seed: int, lr: float, name: str) -> None:
    cfg = config_from_dict({}, [f"seed={seed}", f"optim.lr={lr!r}", f"method.name={name}"])
    assert (cfg.seed, cfg.optim.lr, cfg.method.name) == (seed, lr, name)
    assert torch.tensor(cfg.optim.lr).item() == pytest.approx(lr)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_an_unwritable_output_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["train", "--no-progress", "--out", str(locked / "run")]) == 2
    finally:
        locked.chmod(0o700)
    err = capsys.readouterr().err
    assert "is not writable (" in err and err.count("\n") == 1
    assert not (locked / "run").exists()
