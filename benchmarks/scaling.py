"""How the cost grows with the training set: time per epoch of SGD, SAM and SA-BMA (the drop-in,
default natural-gradient variance) as the number of shots grows, side by side in one process.

EfficientNet-Lite0 (ImageNet weights, offline), norm+head, K = 5, batch 25, random inputs of the
task's shape (10 classes × shots; content does not change the cost) at ``--resolution`` px.
Per cell, after two warm-up steps of each: the median over ``--reps`` alternated epochs of each
variant; SA-BMA's epoch is timed
without a refresh, and one Fisher refresh (per-example gradients of at most ``max_examples``
inputs + the factor) is timed apart, so its amortised cost at the default interval (every
``refresh_epochs`` epochs) is epoch + refresh / refresh_epochs. Each finished cell is written to
``--out`` at once: a rerun skips the cells already there (resumable).

    python -m benchmarks.scaling [--shots 10,100,1000] [--reps 3] [--resolution 32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn.functional import cross_entropy
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.common import machine, train_only_subset, write_json
from sabma import SABMA, SAM, NaturalVariance
from sabma.config.method import VarianceOptions
from sabma.models import build_backbone

BATCH, CLASSES = 25, 10


def cell(shots: int, resolution: int, reps: int) -> dict[str, float]:
    """Median seconds per epoch of each variant, and one refresh, at ``shots`` per class."""
    torch.manual_seed(0)
    n = CLASSES * shots
    x = torch.randn(n, 3, resolution, resolution).contiguous(memory_format=torch.channels_last)
    loader = DataLoader(TensorDataset(x, torch.randint(0, CLASSES, (n,))), batch_size=BATCH)
    sgd_model = build_backbone("efficientnet_lite0", CLASSES).model.train()
    sgd = torch.optim.SGD(train_only_subset(sgd_model), lr=1e-3, momentum=0.9)
    sam_model = build_backbone("efficientnet_lite0", CLASSES).model.train()
    sam = SAM(train_only_subset(sam_model), lr=1e-3, momentum=0.9, model=sam_model)
    model = build_backbone("efficientnet_lite0", CLASSES).model.train()
    variance = NaturalVariance(data=loader, refresh_every=10**9)  # refreshes timed apart
    sabma = SABMA(model, data=loader, lr=1e-3, variance=variance)

    def sgd_epoch(limit: int | None = None) -> None:
        for xb, yb in list(loader)[:limit]:
            sgd.zero_grad()
            cross_entropy(sgd_model(xb), yb).backward()
            sgd.step()

    def sam_epoch(limit: int | None = None) -> None:
        for xb, yb in list(loader)[:limit]:
            sam.zero_grad()
            sam.step(lambda xb=xb, yb=yb: cross_entropy(sam_model(xb), yb).backward())

    def sabma_epoch(limit: int | None = None) -> None:
        for xb, yb in list(loader)[:limit]:
            for _ in sabma.passes():
                cross_entropy(model(xb), yb).backward()
            sabma.step()

    epochs: dict[str, Callable[..., None]] = {
        "SGD": sgd_epoch,
        "SAM": sam_epoch,
        "SA-BMA": sabma_epoch,
    }
    for epoch in epochs.values():  # warm-up: two steps each
        epoch(2)
    sabma.refresh_curvature()
    times: dict[str, list[float]] = {name: [] for name in epochs}
    names = list(epochs)
    for rep in range(reps):
        for name in names if rep % 2 == 0 else reversed(names):
            start = time.perf_counter()
            epochs[name]()
            times[name].append(time.perf_counter() - start)
    refreshes = []
    for _ in range(max(1, reps // 2 + 1)):
        start = time.perf_counter()
        sabma.refresh_curvature()
        refreshes.append(time.perf_counter() - start)
    out = {name: statistics.median(v) for name, v in times.items()}
    out["refresh"] = statistics.median(refreshes)
    out["examples"] = n
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", default="10,100,1000")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--out", default="benchmarks/results/scaling.json")
    args = parser.parse_args()
    path = Path(args.out)
    done = json.loads(path.read_text())["cells"] if path.is_file() else {}
    every = VarianceOptions().refresh_epochs
    for shots in (int(s) for s in args.shots.split(",")):
        key = f"{shots}@{args.resolution}px"
        if key not in done:
            done[key] = cell(shots, args.resolution, args.reps)
            write_json(path, {"machine": machine(), "reps": args.reps, "cells": done})
        c = done[key]
        amortised = c["SA-BMA"] + c["refresh"] / every
        print(
            f"{key:12s} n={c['examples']:6d}  SGD {c['SGD']:7.2f}s  SAM {c['SAM']:7.2f}s  "
            f"SA-BMA {c['SA-BMA']:7.2f}s ({c['SA-BMA'] / c['SAM']:.2f}× SAM)  refresh "
            f"{c['refresh']:6.2f}s  every {every}: {amortised / c['SAM']:.2f}× SAM, every "
            f"epoch: {(c['SA-BMA'] + c['refresh']) / c['SAM']:.2f}× SAM"
        )


if __name__ == "__main__":
    main()
