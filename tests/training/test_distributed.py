"""Two processes (torchrun, gloo) reach the posterior of one process with the same global batch."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.pipeline.test_pipeline import TINY, data_root  # noqa: F401 (fixture)

EPOCHS, BATCH, EXAMPLES = 8, 9, 50  # TINY: 5 shots × 10 classes
STEPS = EPOCHS * math.ceil(EXAMPLES / BATCH)


def tolerance(steps: int) -> float:
    """The bound on |θ_one − θ_two| relative to 1 + max|θ|.

    Two processes sum weighted gradients where one process averages, so each update differs by
    float rounding: a few units in the last place of float32 (ε = 2⁻²³) per coordinate. Nothing
    in the update amplifies that (the factor's column signs are canonical, so a refresh cannot
    flip a column and move every later sample; the network is the kink-free tiny CNN, so no unit
    crossing zero and no tie in a max-pooling window can part the runs: with ReLU and max
    pooling, 1 in ~12 seeds did): the differences add up over the steps, at most 4ε each
    (gradient sum, momentum, σ from h, the factor's subspace iteration)."""
    return 4 * steps * torch.finfo(torch.float32).eps


def low_rank_gap(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """max |a aᵀ − b bᵀ| and the bound it must meet when every entry of a and b agrees within
    ``tolerance`` up to a rotation of the columns: |Δ(DDᵀ)_ij| ≤ Σ_k |E_ik D_jk| + |D_ik E_jk|
    ≤ 2 K e m, with e = tol · (1 + m), m = max |D|. DDᵀ (the covariance the factor adds) is what
    must be equal; the columns themselves are eigen-directions, defined up to such a rotation."""
    if a.numel() == 0:
        return 0.0, 0.0
    a64, b64 = a.double(), b.double()
    gap = float((a64 @ a64.T - b64 @ b64.T).abs().max())
    m = float(a64.abs().max())
    return gap, 2 * a.shape[1] * tolerance(STEPS) * (1 + m) * m


@pytest.mark.parametrize(
    ("method", "curvature"), [("sabma", "reparam"), ("sabma", "fisher"), ("vi", "reparam")]
)
def test_two_processes_match_one(
    tmp_path: Path,
    data_root: Path,  # noqa: F811
    method: str,
    curvature: str,
) -> None:
    overrides = [
        *TINY,
        f"data.root={data_root}",
        "model.backbone=tiny_cnn_smooth",  # no kinks: rounding cannot flip a unit or a pooling tie
        "device=cpu",
        "model.subset=all",
        f"method.name={method}",
        f"method.variance.curvature={curvature}",
        "optim.lr=0.2",
        "prior.norm_std=1",
        "prior.head_var=1",
        f"optim.epochs={EPOCHS}",
        "method.variance.refresh_epochs=1",  # several refreshes (the factor's signs across them)
        f"optim.batch_size={BATCH}",  # uneven slices (5 + 4) and an uneven last batch (5 → 3 + 2)
    ]
    args = [arg for o in overrides for arg in ("--set", o)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = [sys.executable, "-m", "sabma", "train", "--no-progress"]
    two = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "sabma",
        "train",
        "--no-progress",
    ]
    for command, out in ((one, "one"), (two, "two")):
        done = subprocess.run(
            [*command, "--out", str(tmp_path / out), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
    a = load_file(str(tmp_path / "one" / "posterior.safetensors"))
    b = load_file(str(tmp_path / "two" / "posterior.safetensors"))
    assert set(a) == set(b)
    for key in a:
        if key == "posterior.factor":
            gap, bound = low_rank_gap(a[key], b[key])
            assert gap <= bound, (key, gap, bound)
            continue
        scale = 1.0 + float(a[key].abs().max()) if a[key].numel() else 1.0
        diff = float((a[key] - b[key]).abs().max()) if a[key].numel() else 0.0
        assert diff <= tolerance(STEPS) * scale, (key, diff)
    ma = json.loads((tmp_path / "one" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "two" / "metrics.json").read_text())
    for split in ("bma", "mean"):
        for metric, value in ma["test"][split].items():
            assert abs(value - mb["test"][split][metric]) < 1e-4, (split, metric)
    logs = [(tmp_path / r / "train_log.jsonl").read_text().count("\n") for r in ("one", "two")]
    assert logs == [EPOCHS, EPOCHS]  # one writer
