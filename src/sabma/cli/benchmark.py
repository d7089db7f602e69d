"""``sabma benchmark``: all methods × seeds on one configuration, resumable."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sabma.cli.options import add_overrides, add_progress


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "benchmark",
        help="run several methods and seeds on one task and tabulate them",
        description="Run every (method, seed) into OUT/<method>/seed<k> (finished runs with the "
        "same configuration are reused), then write results.csv, results.json, "
        "results.md (mean ± std per method) and results.png.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML configuration (default: the embedded default task)",
    )
    parser.add_argument("--methods", default="all", help="comma-separated names, or 'all'")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--out", type=Path, required=True, help="the benchmark folder")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="10 epochs, 500 test images, S = 10: a fast check of the pipeline",
    )
    parser.add_argument(
        "--lr-search",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="every method chooses its learning rate on its validation split from "
        "[3e-4, 1e-3, 3e-3] (one full run each; default on; --no-lr-search: optim.lr)",
    )
    parser.add_argument(
        "--knob-search",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="then every method chooses its main knob (sabma methods lists each one and its "
        "grid) on validation, at the chosen learning rate (default on; --no-knob-search reuses "
        "a folder written before the knob search)",
    )
    parser.add_argument(
        "--ood",
        action="append",
        metavar="SPEC",
        default=None,
        help="also score every run against this OOD set (repeatable; see sabma evaluate "
        "--help) and write ood.md",
    )
    parser.add_argument("--ood-size", type=int, default=0, help="items per OOD set (0: test size)")
    parser.add_argument(
        "--ood-samples", type=int, default=None, help="BMA samples S for the OOD scores"
    )
    add_overrides(parser, "override a configuration value of every run (repeatable)")
    add_progress(parser)
    parser.set_defaults(run=run, stoppable=True)


def run(args: argparse.Namespace) -> int:
    from sabma.cli.evaluate import ood_options
    from sabma.experiments.benchmark import parse_methods, parse_seeds, run_benchmark

    methods, seeds = parse_methods(args.methods), parse_seeds(args.seeds)
    ood = ood_options(args)
    run_benchmark(
        args.config,
        methods,
        seeds,
        args.out,
        args.overrides,
        args.quick,
        progress=not args.no_progress,
        lr_search=args.lr_search,
        knob_search=args.knob_search,
        ood=ood,
    )
    print((args.out / "results.md").read_text())
    return 0
