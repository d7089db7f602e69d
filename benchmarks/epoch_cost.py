"""The cost of a training *epoch* of SA-BMA with the learned variance against SAM's, side by side
in one process, through the public API as the README shows it — the Fisher refresh included.

EfficientNet-Lite0 (ImageNet weights, offline), norm+head, K = 5, 100 training images at 64 px,
batch 25 (4 steps an epoch): the embedded default's shape. The variants: SAM on the same subset,
and the drop-in ``SABMA(model, data=loader)`` whose natural-gradient variance refreshes its
sampled-label Fisher (and the factor) every k epochs, k in ``--every`` (the trainer's
``method.variance.refresh_epochs``; today's default k = 1). Each repetition trains every variant
for a block of ``--block`` epochs, in an alternating order; the table gives the median time per
epoch (block time / block length, so every k divides the block and the refresh is amortised
exactly) and its ratio to SAM's.

    python -m benchmarks.epoch_cost [--reps 3] [--block 8] [--every 1,2,4,8]
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
from sabma import SABMA, SAM, NaturalVariance
from sabma.models import build_backbone

BATCH, RESOLUTION, EXAMPLES = 25, 64, 100


def variants(every: list[int]) -> dict[str, Callable[[], None]]:
    """name → one training epoch of that variant (its own model and optimiser)."""
    torch.manual_seed(0)
    x = torch.randn(EXAMPLES, 3, RESOLUTION, RESOLUTION).contiguous(
        memory_format=torch.channels_last
    )
    y = torch.randint(0, 10, (EXAMPLES,))
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True)

    sam_model = build_backbone("efficientnet_lite0", 10).model.train()
    sam = SAM(train_only_subset(sam_model), lr=1e-3, momentum=0.9, model=sam_model)

    def sam_epoch() -> None:
        for xb, yb in loader:
            sam.zero_grad()
            sam.step(lambda xb=xb, yb=yb: cross_entropy(sam_model(xb), yb).backward())

    out = {"SAM": sam_epoch}
    for k in every:
        model = build_backbone("efficientnet_lite0", 10).model.train()
        variance = NaturalVariance(data=loader, refresh_every=k * len(loader))
        opt = SABMA(model, data=loader, lr=1e-3, variance=variance)

        def epoch(model: torch.nn.Module = model, opt: SABMA = opt) -> None:
            for xb, yb in loader:
                for _ in opt.passes():
                    cross_entropy(model(xb), yb).backward()
                opt.step()

        out[f"SA-BMA, refresh every {k} epoch{'s' if k > 1 else ''}"] = epoch
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--block", type=int, default=8)
    parser.add_argument("--every", default="1,2,4,8")
    parser.add_argument("--out", default="benchmarks/results/epoch_cost.json")
    args = parser.parse_args()
    every = [int(k) for k in args.every.split(",")]
    if any(args.block % k for k in every):
        raise SystemExit(f"--block {args.block} must be a multiple of every k in {every}")
    epochs = variants(every)
    for epoch in epochs.values():  # warm-up (and the first refresh's set-up)
        epoch()
    times: dict[str, list[float]] = {name: [] for name in epochs}
    names = list(epochs)
    for rep in range(args.reps):
        for name in names if rep % 2 == 0 else reversed(names):
            start = time.perf_counter()
            for _ in range(args.block):
                epochs[name]()
            times[name].append((time.perf_counter() - start) / args.block)
    sam = statistics.median(times["SAM"])
    rows = []
    for name, values in times.items():
        median = statistics.median(values)
        rows.append(
            {"variant": name, "median_s": median, "min_s": min(values), "max_s": max(values),
             "ratio_to_sam": median / sam}
        )  # fmt: skip
        print(f"{name:34s} {median:7.3f} s/epoch  ×{median / sam:5.2f} SAM  "
              f"(blocks {min(values):.3f}–{max(values):.3f})")  # fmt: skip
    write_json(
        args.out,
        {"machine": machine(), "reps": args.reps, "block": args.block, "rows": rows},
    )


if __name__ == "__main__":
    main()
