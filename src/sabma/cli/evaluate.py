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
    _add_shift_arguments(parser)
    _add_ood_arguments(parser)
    add_seeds_filter(parser)
    add_progress(parser)
    parser.set_defaults(run=run)


def _add_shift_arguments(parser: argparse.ArgumentParser) -> None:
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
        help="BMA samples S on the corrupted sets (default: the run's S; MC dropout: its "
        "passes; the ensemble and the samplers always use their stored members or samples)",
    )
    shift.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where generated corrupted sets are kept (default $SABMA_CACHE/corruptions "
        "or ~/.cache/sabma/corruptions)",
    )
    shift.add_argument(
        "--missing",
        action="store_true",
        help="for a benchmark folder: only the runs without a shift section (with "
        "--shift-mean-only: without the mean); what an interrupted folder evaluation still needs",
    )


def _add_ood_arguments(parser: argparse.ArgumentParser) -> None:
    ood = parser.add_argument_group("out-of-distribution detection")
    ood.add_argument(
        "--ood",
        action="append",
        metavar="SPEC",
        default=None,
        help="also score the test split against this OOD set (repeatable): 'near' (the "
        "classes a data.classes run was not trained on; texts: plot synopses), 'far' (images: "
        "scikit-learn's digits; texts: Python docstrings), classes:I,J, fashion_mnist[:I,J], a "
        ".npz/.csv/.txt file or an image folder; adds an 'ood' section and ood.png",
    )
    ood.add_argument(
        "--ood-size",
        type=int,
        default=0,
        help="items per OOD set (default 0: as many as the run's test split)",
    )
    ood.add_argument(
        "--ood-samples",
        type=int,
        default=None,
        help="BMA samples S for the OOD scores (default: the run's S)",
    )


def ood_options(args: argparse.Namespace) -> Any:
    from sabma.ood.evaluate import OODOptions

    if not args.ood:
        if args.ood_size or args.ood_samples is not None:
            raise ValueError("--ood-size and --ood-samples apply with --ood")
        return None
    return OODOptions(tuple(args.ood), args.ood_size, args.ood_samples)


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


def folder_skip(run_dir: Path, shift: Any, missing: bool) -> str:
    """Why a run of a benchmark folder is left out ("": it is evaluated): ``--shift-mean-only``
    has nothing to add to a point estimate or a run without a shift section; ``--missing``
    leaves out runs that have what was asked for."""
    from sabma.methods import get_method
    from sabma.runs.folder import read_metrics

    metrics = read_metrics(run_dir)
    section = metrics.get("shift")
    if shift.mean_only:
        if get_method(metrics["method"]).point:
            return "a point estimate (its predictive is its mean)"
        if section is None:
            return "no shift section yet (run --shift)"
        if missing and "at_mean" in section:
            return "its shift section has the mean already (--missing)"
    elif missing and section is not None:
        return "it has a shift section already (--missing)"
    return ""


def run(args: argparse.Namespace) -> int:
    from sabma.runs.lock import check_free

    check_free(args.run_dir)  # a run in use is refused before torch is imported
    from sabma.experiments.shift_summary import write_shift_summary
    from sabma.experiments.uncertainty_tables import write_uncertainty_tables
    from sabma.pipeline.evaluate import evaluate_run
    from sabma.predict.bma import check_samples
    from sabma.runs.benchmark_folder import benchmark_runs

    if args.samples is not None:
        check_samples(args.samples, "--samples")
    shift = shift_options(args)
    ood = ood_options(args)
    if args.missing and shift is None:
        raise ValueError("--missing applies with --shift or --shift-mean-only")
    progress = not args.no_progress
    runs = benchmark_runs(args.run_dir, args.seeds)
    if not runs:  # a single run directory
        metrics = evaluate_run(
            args.run_dir, args.samples, args.temperature_scaling, progress, shift, ood
        )
        print(json.dumps(metrics["test"], indent=2))
        return 0
    done = []
    for run_dir in runs:
        if shift is not None:
            reason = folder_skip(run_dir, shift, args.missing)
            if reason:
                print(f"skipped {run_dir}: {reason}")
                continue
        metrics = evaluate_run(
            run_dir, args.samples, args.temperature_scaling, progress, shift, ood
        )
        done.append((metrics["method"], metrics["seed"], metrics))
        print(f"evaluated {run_dir}")
    if done:
        write_uncertainty_tables(args.run_dir, done)
    if shift is not None:
        write_shift_summary(args.run_dir)
        print(f"shift summary written to {args.run_dir / 'shift.md'}")
    return 0
