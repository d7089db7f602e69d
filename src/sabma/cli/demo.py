"""``sabma demo``: the embedded default end to end (or the two-moons toy with --task moons)."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from sabma.cli.options import add_overrides, add_progress
from sabma.examples.moons import MoonsConfig, run_moons
from sabma.runs.tables import mean_std_table


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "demo",
        help="SA-BMA vs SGD on 10-shot Fashion-MNIST from EfficientNet-Lite0",
        description="The embedded default: 10-shot Fashion-MNIST (Debian package "
        "dataset-fashion-mnist) from ImageNet-pre-trained EfficientNet-Lite0, "
        "SA-BMA against SGD fine-tuning of the same norm+head subset, with a "
        "frozen-feature linear probe for reference; prints test ACC / NLL / ECE / "
        "Brier as mean ± std over seeds. --task moons runs the two-moons toy instead.",
    )
    parser.add_argument("--task", choices=("fashion_mnist", "moons"), default="fashion_mnist")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs/demo"),
        help="folder for the run directories (default runs/demo); finished runs "
        "with the same configuration are reused",
    )
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    parser.add_argument(
        "--quick", action="store_true", help="one seed, fewer epochs, 1,000 test images"
    )
    add_overrides(parser, "override a configuration value of every run (repeatable)")
    add_progress(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
    seeds = 1 if args.quick else args.seeds
    start = time.perf_counter()
    if args.task == "moons":
        cfg = replace(MoonsConfig(), epochs=100) if args.quick else MoonsConfig()
        results = [run_moons(seed, cfg) for seed in range(seeds)]
        labels = {
            "sgd": "SGD",
            "sabma_bma": "SA-BMA (BMA)",
            "sabma_mean": "SA-BMA (posterior mean)",
        }
        rows = {label: [r[key] for r in results] for key, label in labels.items()}
        title = f"Two moons ({cfg.n_train} training points, noise {cfg.noise}), MLP with LayerNorms"
    else:
        from sabma.transfer.demo import demo_config, run_demo

        rows = run_demo(args.out, seeds, args.quick, args.overrides, progress=not args.no_progress)
        cfg0 = demo_config("sabma", 0, args.quick, args.overrides)
        title = (
            f"{cfg0.data.shots}-shot Fashion-MNIST at {cfg0.data.resolution} px from "
            f"{cfg0.model.backbone}, subset {cfg0.model.subset}, "
            f"{cfg0.data.test_size or 'all'} test images, BMA S = {cfg0.eval.samples}; "
            f"runs in {args.out}"
        )
    print(f"{title}; {seeds} seed(s), test metrics, mean ± std over seeds:\n")
    print(mean_std_table(rows))
    print(f"\nwall time {time.perf_counter() - start:.0f} s")
    return 0
