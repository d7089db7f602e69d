"""The cost of the drop-in paths, side by side in one process: a training step of plain SGD, of
SAM, of SA-BMA through the posterior's functional forward (what ``sabma train`` runs), of the
drop-in SA-BMA on the user's own ``model(x)`` (in place), and of the drop-in with the batch split
into two accumulated micro-batches; the Fisher refresh (once an epoch) is timed after them.

EfficientNet-Lite0 (ImageNet weights, offline), norm+head, K = 5, 64 px, batch 25 — the embedded
default's shape; SGD and SAM train the same subset (the rest frozen). Each repetition times
every step variant once, in an alternating order; the table gives the median time per step and
its ratios to SGD's and SAM's.

    python -m benchmarks.dropin [--reps 20] [--out benchmarks/results/dropin.json]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch.nn.functional import cross_entropy
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.common import machine, train_only_subset, write_json
from sabma import SABMA, SAM, GaussianPosterior, NaturalVariance
from sabma.models import build_backbone

BATCH, RESOLUTION = 25, 64


def setups() -> tuple[dict[str, Callable[[], None]], Callable[[], None]]:
    torch.manual_seed(0)
    x = torch.randn(100, 3, RESOLUTION, RESOLUTION).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (100,))
    data = DataLoader(TensorDataset(x, y), batch_size=BATCH)
    xb, yb = x[:BATCH], y[:BATCH]

    sgd_model = build_backbone("efficientnet_lite0", 10).model.train()
    sgd = torch.optim.SGD(train_only_subset(sgd_model), lr=1e-3, momentum=0.9)

    def sgd_step() -> None:
        sgd.zero_grad()
        cross_entropy(sgd_model(xb), yb).backward()
        sgd.step()

    sam_model = build_backbone("efficientnet_lite0", 10).model.train()
    sam = SAM(train_only_subset(sam_model), lr=1e-3, momentum=0.9, model=sam_model)

    def sam_step() -> None:
        sam.zero_grad()
        sam.step(lambda: cross_entropy(sam_model(xb), yb).backward())

    functional_model = build_backbone("efficientnet_lite0", 10).model.train()
    posterior = GaussianPosterior(functional_model, "norm+head", rank=5, init_std=0.01)

    # the refresh is timed apart: the steps' own schedule never reaches it here
    def variance() -> NaturalVariance:
        return NaturalVariance(data=data, refresh_every=10**9)

    functional = SABMA(posterior, data=data, lr=1e-3, variance=variance())

    def functional_step() -> None:
        functional.zero_grad()
        functional.step(lambda: cross_entropy(posterior(xb), yb).backward())

    model = build_backbone("efficientnet_lite0", 10).model.train()
    dropin = SABMA(model, data=data, lr=1e-3, variance=variance())
    twin = build_backbone("efficientnet_lite0", 10).model.train()
    accumulating = SABMA(twin, data=data, lr=1e-3, variance=variance())

    def dropin_step() -> None:
        for _ in dropin.passes():
            cross_entropy(model(xb), yb).backward()
        dropin.step()

    halves = [
        (xm.contiguous(memory_format=torch.channels_last), ym)
        for xm, ym in zip(xb.chunk(2), yb.chunk(2), strict=True)
    ]

    def accumulated_step() -> None:
        for _ in accumulating.passes():
            for xm, ym in halves:
                (cross_entropy(twin(xm), ym) * len(ym) / BATCH).backward()
        accumulating.step()

    return {
        "SGD": sgd_step,
        "SAM": sam_step,
        "SA-BMA, posterior(x)": functional_step,
        "SA-BMA drop-in, model(x)": dropin_step,
        "SA-BMA drop-in, 2 micro-batches": accumulated_step,
    }, dropin.refresh_curvature


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--out", default="benchmarks/results/dropin.json")
    args = parser.parse_args()
    steps, refresh = setups()
    for step in steps.values():  # warm-up
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for rep in range(args.reps):
        for name in names if rep % 2 == 0 else reversed(names):
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    times["Fisher refresh (drop-in, 100 inputs)"] = []
    refresh()
    for _ in range(max(1, args.reps // 2)):
        start = time.perf_counter()
        refresh()
        times["Fisher refresh (drop-in, 100 inputs)"].append(time.perf_counter() - start)
    base = statistics.median(times["SGD"])
    rows = []
    for name, values in times.items():
        median = statistics.median(values)
        spread = (min(values), max(values))
        rows.append({"variant": name, "median_s": median, "min_s": spread[0], "max_s": spread[1]})
        sam_ratio = median / statistics.median(times["SAM"])
        print(
            f"{name:34s} {median * 1000:8.1f} ms  ×{median / base:5.2f} SGD  ×{sam_ratio:5.2f} SAM"
        )
    write_json(args.out, {"machine": machine(), "reps": args.reps, "rows": rows})


if __name__ == "__main__":
    main()
