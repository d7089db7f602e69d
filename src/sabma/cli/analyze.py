"""``sabma analyze``: flat-vs-sharp BMA and loss-landscape slices of a run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sabma.cli.options import add_progress


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "analyze",
        help="flatness analyses of a run (flat-vs-sharp BMA, loss landscape)",
        description="Analyses of a finished run's posterior; results go to the run directory.",
    )
    kinds = parser.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    flat = kinds.add_parser(
        "flatness",
        help="rank M samples by λ_max; BMA of the flattest / random / sharpest m",
        description="Writes flatness.json and flatness.png.",
    )
    flat.add_argument("run_dir", type=Path)
    flat.add_argument("--samples", type=int, default=10, help="posterior samples M (default 10)")
    land = kinds.add_parser(
        "landscape",
        help="1-D and 2-D training-loss slices around the posterior mean",
        description="Along the top Hessian eigenvectors and random filter-normalised directions; "
        "writes landscape.json and landscape.png.",
    )
    land.add_argument("run_dir", type=Path)
    land.add_argument(
        "--span", type=float, default=0.1, help="α range, in units of ‖μ‖ (default 0.1)"
    )
    land.add_argument("--points", type=int, default=21, help="points of the 1-D slices")
    land.add_argument("--grid", type=int, default=11, help="points per axis of the 2-D slices")
    for sub_parser in (flat, land):
        sub_parser.add_argument(
            "--images", type=int, default=0, help="first N training images (default: all)"
        )
        add_progress(sub_parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from sabma.sharpness.run import SharpnessOptions

    options = SharpnessOptions(images=args.images)
    if args.analysis == "flatness":
        from sabma.sharpness.flatness import analyze_flatness

        if args.samples < 2:
            raise ValueError(f"--samples must be at least 2, got {args.samples}")
        result = analyze_flatness(args.run_dir, args.samples, options, not args.no_progress)
        last = {o: result["curves"][o][-1]["nll"] for o in ("flat", "sharp")}
        first = {o: result["curves"][o][0]["nll"] for o in ("flat", "sharp")}
        print(
            f"NLL of the single flattest / sharpest sample: {first['flat']:.4f} / "
            f"{first['sharp']:.4f}; all {len(result['m'])}: {last['flat']:.4f}"
        )
        print(f"written to {args.run_dir / 'flatness.png'}")
        return 0
    from sabma.sharpness.landscape import analyze_landscape

    if not args.span > 0:
        raise ValueError(f"--span must be > 0, got {args.span}")
    analyze_landscape(args.run_dir, options, args.span, args.points, args.grid)
    print(f"written to {args.run_dir / 'landscape.png'}")
    return 0
