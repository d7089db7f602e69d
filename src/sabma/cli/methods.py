"""``sabma methods``: the training methods, one line each."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "methods",
        help="list the training methods",
        description="List every method usable as method.name=NAME.",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from sabma.methods import METHODS

    width = max(len(name) for name in METHODS)
    for name, cls in sorted(METHODS.items()):
        kind = "point" if cls.point else "Bayesian"
        print(f"{name:<{width}}  {kind:<8}  {cls.summary}")
    return 0
