"""``sabma methods``: the training methods, one line each (``--options``: with their settings)."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "methods",
        help="list the training methods",
        description="List every method usable as method.name=NAME.",
    )
    parser.add_argument(
        "--options",
        action="store_true",
        help="also list each method's settings (method.<section>.<key>) with their defaults",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from sabma.methods import METHODS

    width = max(len(name) for name in METHODS)
    for name, cls in sorted(METHODS.items()):
        kind = "point" if cls.point else "Bayesian"
        print(f"{name:<{width}}  {kind:<8}  {cls.summary}")
        if cls.knob:
            grid = ", ".join(f"{v:g}" for v in cls.knob_grid)
            print(f"{'':<{width}}    knob: {cls.knob}, benchmark grid [{grid}]")
        if args.options:
            for section, options in cls.sections.items():
                for key, value in asdict(options()).items():
                    print(f"{'':<{width}}    method.{section}.{key} = {value}")
    return 0
