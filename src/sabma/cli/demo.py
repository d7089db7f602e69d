"""``sabma demo``: the embedded default end to end; ``--task text`` the Rotten Tomatoes text
task from all-MiniLM-L6-v2; ``--task ood`` OOD detection and selective prediction on the
embedded default's 5-class split; ``--task moons`` the two-moons toy."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from sabma.cli.options import add_overrides, add_progress
from sabma.runs.tables import mean_std_table


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "demo",
        help="SA-BMA vs SGD on 10-shot Fashion-MNIST (64 px) from EfficientNet-Lite0",
        description="The embedded default: 10-shot Fashion-MNIST at 64 px (Debian package "
        "dataset-fashion-mnist) from ImageNet-pre-trained EfficientNet-Lite0, "
        "SA-BMA against SGD fine-tuning of the same norm+head subset (SGD's learning rate "
        "chosen on each seed's validation split), with a frozen-feature linear probe for "
        "reference; prints test ACC / NLL / ECE / Brier as mean ± std over seeds. "
        "--task text runs 32-shot fresh-vs-rotten sentiment (Rotten Tomatoes snippets) "
        "from all-MiniLM-L6-v2 with every LayerNorm + the head Bayesian (there SA-BMA's "
        "learning rate is searched on validation too); "
        "--task ood trains on 5 of the 10 classes and scores each run's OOD detection on "
        "the other 5 (near) and on handwritten digits (far), with selective prediction (AURC); "
        "--task moons the two-moons toy.",
    )
    parser.add_argument(
        "--task", choices=("fashion_mnist", "text", "ood", "moons"), default="fashion_mnist"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the run directories (default runs/demo, runs/demo-<task> for "
        "another task); finished runs with the same configuration are reused",
    )
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    parser.add_argument("--quick", action="store_true", help="one seed, 10 epochs, 500 test images")
    add_overrides(parser, "override a configuration value of every run (repeatable)")
    add_progress(parser)
    parser.set_defaults(run=run, stoppable=True)


#: (row, reference row) pairs whose per-seed differences the demo prints
PAIRS = (("SA-BMA (BMA)", "SGD"), ("SA-BMA (BMA)", "SA-BMA (posterior mean)"))


def paired_differences(
    rows: dict[str, list[dict[str, float]]],
) -> dict[str, list[dict[str, float]]]:
    """Per seed, row − reference for each metric both have (:data:`PAIRS` present in ``rows``)."""
    paired = {}
    for row, reference in PAIRS:
        if row in rows and reference in rows:
            paired[f"{row} − {reference}"] = [
                {k: a[k] - b[k] for k in a.keys() & b.keys()}
                for a, b in zip(rows[row], rows[reference], strict=True)
            ]
    return paired


def run(args: argparse.Namespace) -> int:
    if args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {args.seeds}")
    seeds = 1 if args.quick else args.seeds
    start = time.perf_counter()
    if args.task == "moons":
        from sabma.examples.moons import MoonsConfig, run_moons

        cfg = (
            MoonsConfig(overrides=("optim.epochs=40", *args.overrides))
            if args.quick
            else (MoonsConfig(overrides=tuple(args.overrides)))
        )
        results = [run_moons(seed, cfg) for seed in range(seeds)]
        labels = {
            "sgd": "SGD",
            "sabma_bma": "SA-BMA (BMA)",
            "sabma_mean": "SA-BMA (posterior mean)",
        }
        rows = {label: [r[key] for r in results] for key, label in labels.items()}
        title = f"Two moons ({cfg.n_train} training points, noise {cfg.noise}), MLP with LayerNorms"
    else:
        from sabma.experiments.demo import demo_config, run_demo

        out = args.out or Path(
            "runs/demo" if args.task == "fashion_mnist" else f"runs/demo-{args.task}"
        )
        rows = run_demo(
            out, seeds, args.quick, args.overrides, not args.no_progress, task=args.task
        )
        cfg0 = demo_config("sabma", 0, args.quick, args.overrides, args.task)
        data = (
            f"{cfg0.data.dataset} (≤ {cfg0.data.max_tokens} tokens)"
            if args.task == "text"
            else f"Fashion-MNIST at {cfg0.data.resolution} px"
        )
        if cfg0.data.classes:
            data += f", classes {cfg0.data.classes}"
        title = (
            f"{cfg0.data.shots}-shot {data} from {cfg0.model.backbone}, subset "
            f"{cfg0.model.subset}, {cfg0.data.test_size or 'all'} test examples, BMA S = "
            f"{cfg0.eval.samples}; runs in {out}"
        )
    ood = args.task == "ood"
    measured = (
        "OOD detection (AUROC: near = the other 5 classes, far = handwritten digits; raw) and "
        "selective prediction (AURC of max-probability)"
        if ood
        else "test metrics"
    )
    print(f"{title}; {seeds} seed(s), {measured}, mean ± std over seeds:\n")
    scaled = all("ts_nll" in r for runs in rows.values() for r in runs)
    metrics: tuple[str, ...] = (
        "acc",
        "nll",
        "ece",
        "brier",
        *(("ts_nll", "ts_ece") if scaled else ()),
    )
    if ood:
        from sabma.experiments.demo import OOD_COLUMNS

        metrics = OOD_COLUMNS
    print(mean_std_table(rows, metrics))
    paired = paired_differences(rows)
    if paired:
        better = "positive AUROC, negative AURC" if ood else "negative"
        print(f"\nPaired differences over seeds ({better}: SA-BMA's BMA is better):\n")
        print(mean_std_table(paired, metrics, signed=True))
    print(f"\nwall time {time.perf_counter() - start:.0f} s")
    return 0
