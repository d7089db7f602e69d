"""``sabma evaluate``: re-evaluate a finished run (or every run of a benchmark folder)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sabma.cli.options import add_progress, add_seeds_filter


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "evaluate",
        help="re-evaluate a run directory (BMA samples, temperature scaling, corruptions)",
        description="Load a run's posterior and evaluate it again on its test and validation "
        "splits; rewrites metrics.json, report.md and reliability.png. Given a benchmark folder "
        "(written by 'sabma benchmark'), evaluates every run in it and, with --shift, plots the "
        "methods against the corruption severity.",
    )
    parser.add_argument("run_dir", type=Path, help="a run directory, or a benchmark folder")
    parser.add_argument(
        "--samples", type=int, default=None, help="BMA samples S (default: the run's)"
    )
    parser.add_argument(
        "--temperature-scaling",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fit a temperature on the validation BMA predictive and report the scaled test "
        "metrics as test.bma_ts (default: the run's eval.temperature_scaling, on by default)",
    )
    shift = parser.add_argument_group("distribution shift")
    shift.add_argument(
        "--shift",
        action="store_true",
        help="also evaluate on corrupted test sets; adds a 'shift' section to metrics.json "
        "(a posterior's mean is measured too, as shift.at_mean)",
    )
    shift.add_argument(
        "--shift-mean-only",
        action="store_true",
        help="measure only the posterior mean on the corrupted sets and add it to the run's "
        "existing shift section of the same settings (implies --shift; the BMA's figures stay)",
    )
    shift.add_argument(
        "--corruptions",
        type=_name_list,
        default=None,
        help="comma-separated corruption names, or 'all' (default for images: the families "
        "whose levels are monotone at small sizes, see docs/method.md; for texts: all five)",
    )
    shift.add_argument(
        "--severities", type=_int_list, default=(1, 2, 3, 4, 5), help="default: 1,2,3,4,5"
    )
    shift.add_argument(
        "--shift-size",
        type=int,
        default=0,
        help="evaluate the first N test images of each corrupted set (default 0: all)",
    )
    shift.add_argument(
        "--shift-samples",
        type=int,
        default=None,
        help="BMA samples S on the corrupted sets (default: the run's S)",
    )
    shift.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where generated corrupted sets are kept (default $SABMA_CACHE/corruptions "
        "or ~/.cache/sabma/corruptions)",
    )
    add_seeds_filter(parser)
    add_progress(parser)
    parser.set_defaults(run=run)


def shift_options(args: argparse.Namespace) -> Any:
    from sabma.shift.evaluate import ShiftOptions

    if not (args.shift or args.shift_mean_only):
        return None
    return ShiftOptions(
        corruptions=tuple(args.corruptions) if args.corruptions else None,
        severities=tuple(args.severities),
        size=args.shift_size,
        samples=args.shift_samples,
        cache_dir=args.cache_dir,
        mean_only=args.shift_mean_only,
    )


def mean_only_skip(run_dir: Path) -> str:
    """Why ``--shift-mean-only`` has nothing to add to a run of a benchmark folder ("": it has)."""
    from sabma.methods import get_method
    from sabma.runs.folder import read_metrics

    metrics = read_metrics(run_dir)
    if get_method(metrics["method"]).point:
        return "a point estimate (its predictive is its mean)"
    if "shift" not in metrics:
        return "no shift section yet (run --shift)"
    return ""


def run(args: argparse.Namespace) -> int:
    from sabma.experiments.benchmark import write_shift_summary
    from sabma.pipeline.evaluate import evaluate_run
    from sabma.predict.bma import check_samples
    from sabma.runs.benchmark_folder import benchmark_runs

    if args.samples is not None:
        check_samples(args.samples, "--samples")
    shift = shift_options(args)
    progress = not args.no_progress
    runs = benchmark_runs(args.run_dir, args.seeds)
    if not runs:  # a single run directory
        metrics = evaluate_run(
            args.run_dir, args.samples, args.temperature_scaling, progress, shift
        )
        print(json.dumps(metrics["test"], indent=2))
        return 0
    for run_dir in runs:
        if shift is not None and shift.mean_only:
            reason = mean_only_skip(run_dir)
            if reason:
                print(f"skipped {run_dir}: {reason}")
                continue
        evaluate_run(run_dir, args.samples, args.temperature_scaling, progress, shift)
        print(f"evaluated {run_dir}")
    if shift is not None:
        write_shift_summary(args.run_dir)
        print(f"shift summary written to {args.run_dir / 'shift.md'}")
    return 0
