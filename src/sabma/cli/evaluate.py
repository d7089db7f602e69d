"""``sabma evaluate``: re-evaluate a finished run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sabma.cli.options import add_progress


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "evaluate",
        help="re-evaluate a run directory (BMA samples, temperature scaling)",
        description="Load a run's posterior and evaluate it again on its test and validation "
        "splits; rewrites metrics.json, report.md and reliability.png.",
    )
    parser.add_argument("run_dir", type=Path, help="a directory written by 'sabma train'")
    parser.add_argument(
        "--samples", type=int, default=None, help="BMA samples S (default: the run's)"
    )
    parser.add_argument(
        "--temperature-scaling",
        action="store_true",
        help="fit a temperature on the validation BMA predictive and report "
        "the scaled test metrics as test.bma_ts",
    )
    add_progress(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from sabma.transfer.pipeline import evaluate_run

    if args.samples is not None and args.samples < 1:
        raise ValueError(f"--samples must be at least 1, got {args.samples}")
    metrics = evaluate_run(
        args.run_dir, args.samples, args.temperature_scaling, progress=not args.no_progress
    )
    print(json.dumps(metrics["test"], indent=2))
    return 0
