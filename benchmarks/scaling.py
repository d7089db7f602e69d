"""How the cost grows with the work: time per epoch and peak memory of SGD, SAM, SA-BMA (the
drop-in, default natural-gradient variance) and IVON (the ``ivon-opt`` package), side by side in
one process, as the training set grows and as the Bayesian subset grows; and the BMA's
prediction cost against the number of draws S.

EfficientNet-Lite0 (ImageNet weights, offline), K = 5, batch 25, random inputs of the task's
shape (10 classes × shots; content does not change the cost) at ``--resolution`` px. A cell is
(shots, subset): the shots axis at norm+head, the subset axis (head, norm+head, all) at the
smallest number of shots. LoRA (``--text-subsets``): all-MiniLM-L6-v2 on the text task's shape
(32 shots of 2 classes, batch 16, 64 random tokens), every LayerNorm + the head against rank-8
adapters on every query and value + the head (peft cannot wrap EfficientNet's own padded
convolutions). Per cell, after two warm-up steps of each: the median over ``--reps``
alternated epochs of each variant. SA-BMA's epoch is timed without a refresh, and one Fisher
refresh (per-example gradients of at most ``max_examples`` inputs + the factor) is timed apart,
so its amortised cost at the default interval is epoch + refresh / ``refresh_epochs``.

Memory, per variant: the optimiser's *state* (bytes of every tensor it keeps between steps:
posterior, momenta, curvature; exact, counted) and, with ``--memory``, the *peak* resident size
of a fresh process that builds the network and trains that variant alone for two epochs (SA-BMA's
first update refreshes its Fisher), one child process per variant (Linux VmHWM), in MB.

Each finished cell is written to ``--out`` at once: a rerun skips the cells already there
(resumable). ``--plot`` draws docs/speed_scaling.png from the file.

    python -m benchmarks.scaling [--shots 10,100,1000] [--subsets head,norm+head,all]
        [--text-subsets norm+head,lora]
        [--reps 3] [--resolution 32] [--bma 1,10,30,100] [--plot PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.functional import cross_entropy
from torch.utils.data import DataLoader, Dataset, TensorDataset

from benchmarks.common import machine, train_only_subset, write_json
from benchmarks.memory_probe import state_bytes
from sabma import SABMA, SAM, NaturalVariance
from sabma.models import build_backbone, inputs
from sabma.models.inputs import Inputs
from sabma.models.lora import add_lora
from sabma.posterior.gaussian import logits_of
from sabma.predict.bma import bma_log_probs
from sabma.variance.options import VarianceOptions

BATCH, CLASSES = 25, 10
VARIANTS = ("SGD", "SAM", "SA-BMA", "IVON")
#: the text cells: the LoRA study's task shape (32 shots of 2 classes, batch 16), 64 tokens
TEXT_CLASSES, TEXT_SHOTS, TEXT_BATCH, TOKENS = 2, 32, 16, 64


def _network(subset: str = "norm+head", text: bool = False) -> nn.Module:
    if not text:
        return build_backbone("efficientnet_lite0", CLASSES).model.train()
    model = build_backbone("minilm", TEXT_CLASSES).model.train()
    if subset == "lora":  # the LoRA study's adapters: rank 8 on every query and value
        add_lora(model, rank=8, alpha=16, targets=("query", "value"))
    return model


class _Texts(Dataset):
    """Random token ids of one length (content does not change the cost), as the text task's
    batches: ({input_ids, attention_mask}, label)."""

    def __init__(self, n: int) -> None:
        self.ids = torch.randint(1000, 30000, (n, TOKENS))
        self.labels = torch.randint(0, TEXT_CLASSES, (n,))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[dict[str, Tensor], Tensor]:
        x = {"input_ids": self.ids[i], "attention_mask": torch.ones(TOKENS, dtype=torch.long)}
        return x, self.labels[i]


def training_data(shots: int, resolution: int, text: bool = False) -> DataLoader:
    torch.manual_seed(0)
    if text:
        return DataLoader(_Texts(TEXT_CLASSES * shots), batch_size=TEXT_BATCH)
    n = CLASSES * shots
    x = torch.randn(n, 3, resolution, resolution).contiguous(memory_format=torch.channels_last)
    return DataLoader(TensorDataset(x, torch.randint(0, CLASSES, (n,))), batch_size=BATCH)


def _logits(model: nn.Module, x: Inputs) -> Tensor:
    return logits_of(inputs.call(model, x))


def _optimiser(name: str, model: nn.Module, loader: DataLoader, subset: str) -> Any:
    if name == "SGD":
        return torch.optim.SGD(train_only_subset(model, subset), lr=1e-3, momentum=0.9)
    if name == "SAM":
        return SAM(train_only_subset(model, subset), lr=1e-3, momentum=0.9, model=model)
    if name == "SA-BMA":
        variance = NaturalVariance(data=loader, refresh_every=10**9)  # refreshes timed apart
        return SABMA(model, data=loader, lr=1e-3, subset=subset, variance=variance)
    import ivon

    n = len(loader.dataset)  # type: ignore[arg-type]
    return ivon.IVON(train_only_subset(model, subset), lr=1e-3, ess=n)


def trainers(
    loader: DataLoader, subset: str, text: bool = False, names: tuple[str, ...] = VARIANTS
) -> tuple[dict[str, Callable[..., None]], dict[str, Any]]:
    """name → one epoch (``limit``: its first batches only) of that variant, on its own copy of
    the network and the same subset; and name → its optimiser."""
    models = {name: _network(subset, text) for name in names}
    optimisers = {name: _optimiser(name, models[name], loader, subset) for name in names}
    sgd, sam = optimisers.get("SGD"), optimisers.get("SAM")
    sabma, ivon_opt = optimisers.get("SA-BMA"), optimisers.get("IVON")

    def batches(limit: int | None) -> list[tuple[Tensor, Tensor]]:
        return list(loader)[:limit]

    def sgd_epoch(limit: int | None = None) -> None:
        for xb, yb in batches(limit):
            sgd.zero_grad()
            cross_entropy(_logits(models["SGD"], xb), yb).backward()
            sgd.step()

    def sam_epoch(limit: int | None = None) -> None:
        for xb, yb in batches(limit):
            sam.zero_grad()
            sam.step(lambda xb=xb, yb=yb: cross_entropy(_logits(models["SAM"], xb), yb).backward())

    def sabma_epoch(limit: int | None = None) -> None:
        for xb, yb in batches(limit):
            for _ in sabma.passes():
                cross_entropy(_logits(models["SA-BMA"], xb), yb).backward()
            sabma.step()

    def ivon_epoch(limit: int | None = None) -> None:
        for xb, yb in batches(limit):
            ivon_opt.zero_grad()
            with ivon_opt.sampled_params(train=True):
                cross_entropy(_logits(models["IVON"], xb), yb).backward()
            ivon_opt.step()

    epochs = {"SGD": sgd_epoch, "SAM": sam_epoch, "SA-BMA": sabma_epoch, "IVON": ivon_epoch}
    return {name: epochs[name] for name in names}, optimisers


def cell(shots: int, subset: str, resolution: int, reps: int, text: bool = False) -> dict[str, Any]:
    """Median seconds per epoch and state MB of each variant, and one refresh."""
    loader = training_data(shots, resolution, text)
    epochs, optimisers = trainers(loader, subset, text)
    sabma = optimisers["SA-BMA"]
    for epoch in epochs.values():  # warm-up: two steps each (optimiser state allocated)
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
    out: dict[str, Any] = {name: statistics.median(v) for name, v in times.items()}
    out["refresh"] = statistics.median(refreshes)
    out["examples"] = len(loader.dataset)  # type: ignore[arg-type]
    out["d"] = sabma.posterior.dim
    out["state_mb"] = {name: state_bytes(opt) / 2**20 for name, opt in optimisers.items()}
    return out


def bma_costs(samples: list[int], resolution: int, reps: int) -> dict[str, float]:
    """Seconds per batch of 25 of the BMA (norm+head, prefix cached where fx allows) at each S,
    and of one plain forward pass."""
    torch.manual_seed(0)
    model = _network().eval()
    sabma = SABMA(model, data=torch.randn(8, 3, resolution, resolution), lr=1e-3)
    posterior = sabma.posterior.eval()
    x = torch.randn(BATCH, 3, resolution, resolution).contiguous(memory_format=torch.channels_last)
    runs: dict[str, Callable[[], Any]] = {"forward": lambda: model(x)}
    for s in samples:
        runs[f"S={s}"] = lambda s=s: bma_log_probs(posterior, x, samples=s)
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.no_grad():
        for run in runs.values():
            run()
        for _ in range(reps):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(v) for name, v in times.items()}


def memory(cells: list[tuple[str, int, str, bool]], resolution: int) -> dict[str, Any]:
    """Peak resident MB of a fresh process that trains each variant for two epochs, per cell
    (key, shots, subset, text): one child process per (cell, variant)."""
    out: dict[str, Any] = {}
    for key, shots, subset, text in cells:
        out[key] = {}
        for variant in VARIANTS:
            command = [
                sys.executable, "-m", "benchmarks.memory_probe", variant, subset,
                "--shots", str(shots), "--resolution", str(resolution),
                *(["--text"] if text else []),
            ]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            out[key][variant] = json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"]
        print(f"memory: {key}: {out[key]}", flush=True)
    return out


def report(cells: dict[str, dict[str, Any]], every: int) -> None:
    print(
        "| cell | n | d | SGD s/epoch | SAM | SA-BMA (× SAM) | IVON (× SAM) | one refresh | "
        f"SA-BMA, refresh every {every} epochs (× SAM) | state MB SAM / SA-BMA / IVON |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key, c in cells.items():
        sam = c["SAM"]
        amortised = c["SA-BMA"] + c["refresh"] / every
        state = c.get("state_mb", {})
        mem = " / ".join(f"{state.get(v, float('nan')):.1f}" for v in ("SAM", "SA-BMA", "IVON"))
        print(
            f"| {key} | {c['examples']:,} | {c.get('d', 0):,} | {c['SGD']:.2f} | {sam:.2f} | "
            f"{c['SA-BMA']:.2f} ({c['SA-BMA'] / sam:.2f}) | "
            f"{c.get('IVON', float('nan')):.2f} ({c.get('IVON', float('nan')) / sam:.2f}) | "
            f"{c['refresh']:.2f} s | {amortised:.2f} ({amortised / sam:.2f}) | {mem} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", default="10,100,1000")
    parser.add_argument("--subsets", default="head,norm+head,all")
    parser.add_argument("--text-subsets", default="norm+head,lora", help="'' to skip")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--bma", default="1,10,30,100", help="S values ('' to skip)")
    parser.add_argument("--out", default="benchmarks/results/scaling.json")
    parser.add_argument("--plot", default=None, help="draw the figure from --out to this path")
    parser.add_argument(
        "--memory", action="store_true", help="also the peak resident MB, one process per variant"
    )
    args = parser.parse_args()
    path = Path(args.out)
    stored = json.loads(path.read_text()) if path.is_file() else {}
    done: dict[str, Any] = stored.get("cells", {})
    if args.plot:
        from benchmarks.scaling_plot import plot

        plot(stored, args.plot)
        print(f"written {args.plot}")
        return
    shots = [int(s) for s in args.shots.split(",")]
    subsets = args.subsets.split(",")
    wanted = [(s, "norm+head") for s in shots] + [(min(shots), sub) for sub in subsets]
    for n_shots, subset in dict.fromkeys(wanted):
        key = f"{n_shots} shots, {subset}, {args.resolution}px"
        if key not in done or "IVON" not in done[key]:
            done[key] = cell(n_shots, subset, args.resolution, args.reps)
            stored.update({"machine": machine(), "reps": args.reps, "cells": done})
            write_json(path, stored)
        print(f"done: {key}", flush=True)
    for subset in filter(None, args.text_subsets.split(",")):
        key = f"{TEXT_SHOTS} shots, text {subset}, {TOKENS} tokens"
        if key not in done:
            done[key] = cell(TEXT_SHOTS, subset, args.resolution, args.reps, text=True)
            stored.update({"machine": machine(), "reps": args.reps, "cells": done})
            write_json(path, stored)
        print(f"done: {key}", flush=True)
    if args.memory and "memory" not in stored:
        smallest = min(shots)
        cells = [(f"{smallest} shots, {sub}, {args.resolution}px", smallest, sub, False)
                 for sub in subsets]  # fmt: skip
        cells += [(f"{TEXT_SHOTS} shots, text {sub}, {TOKENS} tokens", TEXT_SHOTS, sub, True)
                  for sub in filter(None, args.text_subsets.split(","))]  # fmt: skip
        stored["memory"] = memory(cells, args.resolution)
        write_json(path, stored)
    if args.bma and "bma" not in stored:
        stored["bma"] = bma_costs([int(s) for s in args.bma.split(",")], args.resolution, 5)
        write_json(path, stored)
    report(done, VarianceOptions().refresh_epochs)
    if "memory" in stored:
        print("\n| cell | peak MB SGD | SAM | SA-BMA | IVON | SA-BMA − SGD | IVON − SGD |")
        print("|---|---|---|---|---|---|---|")
        for key, peak in stored["memory"].items():
            print(
                f"| {key} | {peak['SGD']:.0f} | {peak['SAM']:.0f} | {peak['SA-BMA']:.0f} | "
                f"{peak['IVON']:.0f} | {peak['SA-BMA'] - peak['SGD']:+.0f} | "
                f"{peak['IVON'] - peak['SGD']:+.0f} |"
            )
    if "bma" in stored:
        forward = stored["bma"]["forward"]
        print("\n| S | BMA s/batch | × one forward pass |\n|---|---|---|")
        for name, value in stored["bma"].items():
            print(f"| {name} | {value:.3f} | {value / forward:.1f} |")


if __name__ == "__main__":
    main()
