"""Resuming a killed run gives the metrics of an uninterrupted one; the same seed, the same run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sabma.methods import base
from sabma.pipeline.train import run_or_reuse, train_run
from sabma.runs.folder import CHECKPOINT
from tests.pipeline.test_pipeline import data_root, tiny_config  # noqa: F401 (fixture)


def _without_timings(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k != "timing"}


def _log_without_timings(run: Path) -> list[dict[str, Any]]:
    lines = (run / "train_log.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "epoch_s"} for x in lines]


class _Killed(Exception):
    pass


@pytest.mark.parametrize(
    ("method", "kill_at"),
    [
        ("sabma", 7),  # mid-epoch (5 steps per epoch)
        ("sabma", 10),  # right after an epoch's last step, before its validation
        ("swag", 13),  # method state: SWAG moments
        ("csgld", 12),  # method state: samples and the cycle position
        ("ensemble", 23),  # second member (members × 4 epochs × 5 steps)
        ("vi", 8),  # natural-gradient VI: the curvature h in the optimiser's state
        ("ivon", 8),  # ivon-opt's state and its step count (kept by the method)
    ],
)
def test_resume_after_a_crash_equals_the_uninterrupted_run(
    tmp_path: Path,
    data_root: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    kill_at: int,
) -> None:
    extra = [f"method.name={method}", "optim.checkpoint_every=1", "method.ensemble.size=2"]
    if method in ("swag", "csgld"):
        extra += ["method.swag.start=2", "method.csgld.cycles=2", "optim.lr=0.01"]
    cfg = tiny_config(data_root, *extra)
    full = train_run(cfg, tmp_path / "full", progress=False)
    assert not (tmp_path / "full" / CHECKPOINT).exists()

    steps = {"n": 0}
    original = base.Method.step

    def crashing(self: base.Method, *args: Any) -> float:
        steps["n"] += 1
        if steps["n"] > kill_at:
            raise _Killed
        return original(self, *args)

    monkeypatch.setattr(base.Method, "step", crashing)
    for cls in base.Method.__subclasses__():
        for sub in [cls, *cls.__subclasses__()]:
            if "step" in vars(sub):
                monkeypatch.setattr(sub, "step", _wrap(vars(sub)["step"], steps, kill_at))
    with pytest.raises(_Killed):
        train_run(cfg, tmp_path / "run", progress=False)
    monkeypatch.undo()
    assert (tmp_path / "run" / CHECKPOINT).is_file()
    assert not (tmp_path / "run" / "metrics.json").exists()
    resumed = train_run(cfg, tmp_path / "run", progress=False, resume=True)
    assert _without_timings(resumed) == _without_timings(full)
    assert _log_without_timings(tmp_path / "run") == _log_without_timings(tmp_path / "full")
    assert not (tmp_path / "run" / CHECKPOINT).exists()


def _wrap(step: Any, steps: dict[str, int], kill_at: int) -> Any:
    def crashing(self: Any, *args: Any) -> Any:
        steps["n"] += 1
        if steps["n"] > kill_at:
            raise _Killed
        return step(self, *args)

    return crashing


def test_resume_refuses_finished_and_different_runs(
    tmp_path: Path,
    data_root: Path,  # noqa: F811
) -> None:
    cfg = tiny_config(data_root, "optim.epochs=1")
    train_run(cfg, tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="holds a finished run; there is nothing to resume"):
        train_run(cfg, tmp_path / "run", progress=False, resume=True)
    with pytest.raises(ValueError, match="holds no run to resume"):
        train_run(cfg, tmp_path / "empty", progress=False, resume=True)
    (tmp_path / "run" / "metrics.json").unlink()
    with pytest.raises(ValueError, match="the configuration differs"):
        train_run(tiny_config(data_root, "optim.epochs=2"), tmp_path / "run", resume=True)


def test_the_same_seed_gives_the_same_metrics(tmp_path: Path, data_root: Path) -> None:  # noqa: F811
    cfg = tiny_config(data_root)
    first = train_run(cfg, tmp_path / "a", progress=False)
    second = train_run(cfg, tmp_path / "b", progress=False)
    assert _without_timings(first) == _without_timings(second)
    other = train_run(tiny_config(data_root, "seed=1"), tmp_path / "c", progress=False)
    assert _without_timings(other) != _without_timings(first)


def test_sigkill_at_a_random_moment_then_resume(tmp_path: Path, data_root: Path) -> None:  # noqa: F811
    """A real SIGKILL of `sabma train` in a subprocess, while it writes checkpoints."""
    overrides = [
        "model.backbone=tiny_cnn",
        "data.shots=5",
        "data.val_shots=5",
        "data.test_size=40",
        "data.resolution=16",
        "optim.epochs=6",
        "optim.batch_size=10",
        "optim.lr=0.05",
        "optim.checkpoint_every=1",
        "eval.eval_every=2",
        "eval.samples=4",
        "eval.val_samples=2",
        "method.sabma.rank=2",
        f"data.root={data_root}",
    ]
    args = [arg for o in overrides for arg in ("--set", o)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def sabma(*extra: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "sabma", "train", "--no-progress", *extra],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    full = sabma("--out", str(tmp_path / "full"), *args)
    run = sabma("--out", str(tmp_path / "run"), *args)
    checkpoint = tmp_path / "run" / CHECKPOINT
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.01)
    time.sleep(0.3 + 0.5 * (time.time_ns() % 1000) / 1000)  # a moment during training
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert full.wait() == 0, full.stderr.read().decode() if full.stderr else ""
    if (tmp_path / "run" / "metrics.json").exists():
        pytest.skip("the run finished before the kill")  # too fast a machine: nothing to test
    resumed = sabma("--out", str(tmp_path / "run"), "--resume")
    assert resumed.wait() == 0, resumed.stderr.read().decode() if resumed.stderr else ""
    a = json.loads((tmp_path / "full" / "metrics.json").read_text())
    b = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert _without_timings(a) == _without_timings(b)


def test_benchmark_resumes_a_half_written_run(
    tmp_path: Path,
    data_root: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = tiny_config(data_root, "optim.checkpoint_every=3")
    out = tmp_path / "run"
    original = base.Method.step
    steps = {"n": 0}

    def crashing(self: base.Method, *args: Any) -> float:
        steps["n"] += 1
        if steps["n"] > 8:
            raise _Killed
        return original(self, *args)

    monkeypatch.setattr(base.Method, "step", crashing)
    with pytest.raises(_Killed):
        run_or_reuse(cfg, out, progress=False)
    monkeypatch.undo()
    assert not (out / "metrics.json").exists()  # not counted as finished
    resumed = run_or_reuse(cfg, out, progress=False)
    full = train_run(cfg, tmp_path / "full", progress=False)
    assert _without_timings(resumed) == _without_timings(full)


def test_resume_may_lower_the_learning_rate(
    tmp_path: Path,
    data_root: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A resume with another optim.lr continues the schedule at the new rate (the advice after a
    divergence), writes it to config.yaml, and still refuses a change of the run's identity."""
    cfg = tiny_config(data_root, "optim.checkpoint_every=1")
    full = train_run(cfg, tmp_path / "full", progress=False)
    steps = {"n": 0}
    monkeypatch.setattr(base.Method, "step", _wrap(base.Method.step, steps, 7))
    for cls in base.Method.__subclasses__():
        if "step" in vars(cls):
            monkeypatch.setattr(cls, "step", _wrap(vars(cls)["step"], steps, 7))
    with pytest.raises(_Killed):
        train_run(cfg, tmp_path / "run", progress=False)
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"seed: 0 → 1\); a resume may change only optim.lr"):
        train_run(
            tiny_config(data_root, "optim.checkpoint_every=1", "seed=1"),
            tmp_path / "run",
            resume=True,
        )
    lower = tiny_config(data_root, "optim.checkpoint_every=1", f"optim.lr={cfg.optim.lr / 2}")
    resumed = train_run(lower, tmp_path / "run", progress=False, resume=True)
    assert "lr: " + str(cfg.optim.lr / 2) in (tmp_path / "run" / "config.yaml").read_text()
    # without the rescale the optimiser's restored state would keep the old rate: same metrics
    assert resumed["test"] != full["test"]


def test_rescaled_schedule_follows_the_same_shape_at_the_new_rate() -> None:
    import torch

    from sabma.step.schedule import warmup_cosine
    from sabma.training.member import rescale_lr

    def schedule() -> tuple[torch.optim.Optimizer, Any]:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        return opt, warmup_cosine(opt, 20, 3)

    (a, sa), (b, sb) = schedule(), schedule()
    for _ in range(5):
        a.step(), sa.step(), b.step(), sb.step()
    sb.load_state_dict(sa.state_dict())
    rescale_lr(sb, 0.25)
    for _ in range(10):
        assert b.param_groups[0]["lr"] == pytest.approx(0.25 * a.param_groups[0]["lr"], rel=1e-12)
        a.step(), sa.step(), b.step(), sb.step()
