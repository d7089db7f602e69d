"""Ctrl-C and SIGTERM stop `sabma train` at the next step with its checkpoint written, one line,
exit 130 / 143; --resume then finishes it as if it had never stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.pipeline.test_pipeline import data_root  # noqa: F401 (fixture)
from tests.runs.test_lock import command, wait_for

SLOW = ("optim.epochs=100", "eval.eval_every=100", "optim.checkpoint_every=1000")


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_cleanly_and_resume_continues(
    tmp_path: Path,
    data_root: Path,  # noqa: F811
    signum: int,
    status: int,
) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "R"
    process = subprocess.Popen(
        command(run, data_root, *SLOW), env=env, text=True, stderr=subprocess.PIPE
    )
    wait_for(run / "train_log.jsonl", process)
    while not (run / "train_log.jsonl").read_text():  # a few epochs in
        assert process.poll() is None
        time.sleep(0.05)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == status, err
    name = signal.Signals(signum).name
    assert err.count("\n") == 1 and f"sabma: {name}: stopped at epoch " in err, err
    assert f"sabma train --out {run} --resume continues" in err
    assert (run / "checkpoint.safetensors").is_file() and not (run / "metrics.json").exists()
    resumed = subprocess.run(
        [*command(run, data_root, *SLOW), "--resume"], env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    alone = tmp_path / "alone"
    assert subprocess.run(command(alone, data_root, *SLOW), env=env).returncode == 0
    got = json.loads((run / "metrics.json").read_text())
    want = json.loads((alone / "metrics.json").read_text())
    assert got["test"] == want["test"]
