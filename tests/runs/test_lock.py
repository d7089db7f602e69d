"""One writer per run folder: a second writer is refused with the holder's name; the lock dies
with its holder; an interrupted run is not thrown away by a fresh ``train``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sabma.runs.lock import LOCK, RunBusy, run_lock
from tests.pipeline.test_pipeline import TINY, data_root  # noqa: F401 (fixture)


def command(out: Path, root: Path, *extra: str) -> list[str]:
    overrides = [*TINY, f"data.root={root}", "device=cpu", *extra]
    args = [a for o in overrides for a in ("--set", o)]
    return [sys.executable, "-m", "sabma", "train", "--no-progress", "--out", str(out), *args]


def wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 120) -> None:
    start = time.monotonic()
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() - start < timeout, f"{path} never appeared"
        time.sleep(0.05)


def test_a_second_writer_is_refused_and_the_first_finishes_as_if_alone(
    tmp_path: Path,
    data_root: Path,  # noqa: F811
) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "R"
    slow = ("optim.epochs=100", "eval.eval_every=100")
    first = subprocess.Popen(
        command(run, data_root, *slow), env=env, text=True, stderr=subprocess.PIPE
    )
    wait_for(run / "config.yaml", first)
    # a fresh train of other settings and a --resume, both while the first one runs
    attempts = [
        subprocess.Popen(cmd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for cmd in (
            command(run, data_root, *slow, "seed=1"),
            [*command(run, data_root, *slow), "--resume"],
        )
    ]
    for attempt in attempts:
        _, err = attempt.communicate(timeout=120)
        assert attempt.returncode == 2, err
        assert err.count("\n") == 1, err
        assert f"is in use by pid {first.pid} on " in err
    assert first.poll() is None  # the refusals came while it ran
    assert first.wait(timeout=600) == 0
    alone = tmp_path / "alone"
    assert subprocess.run(command(alone, data_root, *slow), env=env).returncode == 0
    got = json.loads((run / "metrics.json").read_text())
    want = json.loads((alone / "metrics.json").read_text())
    assert got["test"] == want["test"] and got["seed"] == 0
    logs = (run / "train_log.jsonl").read_text().splitlines()
    assert len(logs) == 100  # one writer: no duplicated epoch lines


def test_kill_9_leaves_no_stale_lock_and_train_refuses_the_interrupted_run(
    tmp_path: Path,
    data_root: Path,  # noqa: F811
) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "R"
    extra = ("optim.epochs=40", "eval.eval_every=40", "optim.checkpoint_every=5")
    holder = subprocess.Popen(
        command(run, data_root, *extra), env=env, text=True, stderr=subprocess.PIPE
    )
    wait_for(run / "checkpoint.safetensors", holder)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    fresh = subprocess.run(command(run, data_root, *extra), env=env, text=True, capture_output=True)
    assert fresh.returncode == 2
    assert "holds an interrupted run: --resume to continue it, or choose another --out" in (
        fresh.stderr
    )
    assert (run / "checkpoint.safetensors").is_file()  # nothing thrown away
    # config.yaml edited before --resume: the checkpoint knows the run's configuration
    original = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(original.replace("seed: 0", "seed: 1"))
    edited = subprocess.run(
        [sys.executable, "-m", "sabma", "train", "--out", str(run), "--resume"],
        env=env,
        text=True,
        capture_output=True,
    )
    assert edited.returncode == 2 and edited.stderr.count("\n") == 1, edited.stderr
    assert "config.yaml differs from the configuration checkpoint.safetensors was written with" in (
        edited.stderr
    )
    assert "seed: 0 → 1" in edited.stderr
    (run / "config.yaml").write_text(original)
    resumed = subprocess.run(
        [*command(run, data_root, *extra), "--resume"], env=env, text=True, capture_output=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (run / "metrics.json").is_file()


def test_the_lock_in_process(tmp_path: Path) -> None:
    folder = tmp_path / "new"
    with pytest.raises(ZeroDivisionError), run_lock(folder):
        assert (folder / LOCK).is_file()
        1 / 0  # noqa: B018 - the work fails before writing anything
    assert not folder.exists()  # the folder the lock created is gone again
    with run_lock(tmp_path), run_lock(tmp_path):  # re-entrant within a process
        holder = json.loads((tmp_path / LOCK).read_text())
        assert holder["pid"] == os.getpid()
        child = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from sabma.runs.lock import run_lock\nwith run_lock({str(tmp_path)!r}): pass",
            ],
            capture_output=True,
            text=True,
        )
        assert child.returncode != 0 and f"is in use by pid {os.getpid()}" in child.stderr
    with run_lock(tmp_path):  # released: free again
        pass
    assert issubclass(RunBusy, ValueError)
