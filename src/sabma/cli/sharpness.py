"""``sabma sharpness``: Hessian spectra and traces at a run's posterior samples."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sabma.cli.options import add_progress, add_seeds_filter


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "sharpness",
        help="top-k Hessian eigenvalues and trace at a run's posterior samples",
        description="Top-k eigenvalues (Lanczos on Hessian-vector products) and the Hutchinson "
        "trace of the training loss with respect to the Bayesian subset, at each of M posterior "
        "samples, on the non-augmented training split with the network in eval mode. Adds a "
        "'sharpness' section to metrics.json. Given a benchmark folder, measures every run and "
        "writes sharpness.md.",
    )
    parser.add_argument("run_dir", type=Path, help="a run directory, or a benchmark folder")
    parser.add_argument("--top-k", type=int, default=5, help="eigenvalues per sample (default 5)")
    parser.add_argument("--samples", type=int, default=5, help="posterior samples M (default 5)")
    parser.add_argument("--probes", type=int, default=20, help="Hutchinson probes (default 20)")
    parser.add_argument(
        "--images",
        type=int,
        default=0,
        help="use the first N training images (default 0: the whole training split)",
    )
    parser.add_argument("--tol", type=float, default=1e-3, help="Lanczos tolerance (default 1e-3)")
    parser.add_argument(
        "--at-mean",
        action="store_true",
        help="also measure at the posterior mean (for a Gaussian posterior: the like-for-like "
        "comparison with a point estimate)",
    )
    parser.add_argument(
        "--missing",
        action="store_true",
        help="for a benchmark folder: only the runs without a sharpness section (what an "
        "interrupted folder measurement still needs)",
    )
    add_seeds_filter(parser)
    add_progress(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from sabma.runs.lock import check_free

    check_free(args.run_dir)  # a run in use is refused before torch is imported
    from sabma.runs.benchmark_folder import benchmark_runs
    from sabma.runs.folder import read_metrics
    from sabma.sharpness.run import SharpnessOptions, sharpness_run, write_sharpness_summary

    options = SharpnessOptions(
        top_k=args.top_k,
        samples=args.samples,
        probes=args.probes,
        images=args.images,
        tol=args.tol,
        at_mean=args.at_mean,
    )
    progress = not args.no_progress
    runs = benchmark_runs(args.run_dir, args.seeds)
    if args.missing and not runs:
        raise ValueError("--missing applies to a benchmark folder")
    for run_dir in runs or [args.run_dir]:
        if args.missing and "sharpness" in read_metrics(run_dir):
            print(f"skipped {run_dir}: it has a sharpness section already (--missing)")
            continue
        result = sharpness_run(run_dir, options, progress)
        lam = result["lambda_max"]
        shown = "failed" if lam is None else f"{lam:.4g}"
        centre = result.get("mean_lambda_max")
        extra = "" if centre is None else f", lambda_max at the mean {centre:.4g}"
        print(f"{run_dir}: lambda_max {shown}, trace {result['trace']:.4g}{extra}")
    if runs:
        write_sharpness_summary(args.run_dir)
        print(f"sharpness summary written to {args.run_dir / 'sharpness.md'}")
    return 0
