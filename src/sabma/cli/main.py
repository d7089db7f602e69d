"""``sabma``: the command-line entry point. Each sub-command lives in its own module."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Sequence

from sabma import __version__
from sabma.cli import analyze, benchmark, demo, evaluate, methods, sharpness, train
from sabma.runs.stopping import Stopped, stop_on_signals

COMMANDS = (demo, train, evaluate, benchmark, sharpness, analyze, methods)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sabma",
        description="Sharpness-aware Bayesian model averaging and Bayesian transfer learning.",
    )
    parser.add_argument("--version", action="version", version=f"sabma {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    stoppable = getattr(args, "stoppable", False)
    try:
        with stop_on_signals() if stoppable else contextlib.nullcontext():
            return int(args.run(args))
    except Stopped as stop:
        again = (
            f"sabma train --out {args.out} --resume"
            if args.command == "train"
            else "the same command"
        )
        print(f"sabma: {stop}; {again} continues", file=sys.stderr)
        return stop.exit_status
    except KeyboardInterrupt:
        print("sabma: interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    except (ValueError, OSError, FloatingPointError) as err:
        if args.debug:
            raise
        print(f"sabma: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
