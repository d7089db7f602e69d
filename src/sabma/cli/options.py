"""Command-line options shared by several sub-commands."""

from __future__ import annotations

import argparse


def add_overrides(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help_text
    )


def add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` → [0, 1, 2] (an argparse type)."""
    from sabma.experiments.benchmark import parse_seeds as parse

    try:
        return parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_seeds_filter(parser: argparse.ArgumentParser) -> None:
    """``--seeds``: restrict a command on a benchmark folder to some seeds' runs."""
    parser.add_argument(
        "--seeds",
        type=parse_seeds,
        default=None,
        help="for a benchmark folder: only the runs of these seeds, e.g. 0 or 0,1 (default: all)",
    )
