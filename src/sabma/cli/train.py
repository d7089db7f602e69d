"""``sabma train``: one run of the transfer scheme into a run directory."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sabma.cli.options import add_overrides, add_progress


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "train",
        help="train one method on one task into a run directory",
        description="Train and evaluate one run. The run directory receives config.yaml, "
        "train_log.jsonl, posterior.safetensors (+ .json), reliability.png, report.md "
        "and, last, metrics.json.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML configuration (default: the embedded default task)",
    )
    add_overrides(
        parser, "override a configuration value, e.g. --set method.sabma.rho=0.1 (repeatable)"
    )
    parser.add_argument("--out", type=Path, required=True, help="the run directory to create")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run in --out from its last checkpoint, with its "
        "config.yaml (and --set on top: a resume may change the learning rate and evaluation "
        "settings, see docs/reliability.md)",
    )
    add_progress(parser)
    parser.set_defaults(run=run, stoppable=True)


def run(args: argparse.Namespace) -> int:
    from sabma.runs.lock import check_free

    check_free(args.out)  # a second writer is refused before torch is imported
    from sabma import distributed
    from sabma.config import load_config
    from sabma.pipeline.train import train_run
    from sabma.runs.folder import CONFIG

    if args.resume and args.config is None:  # the run's own configuration, --set on top
        saved = args.out / CONFIG
        if not saved.is_file():
            raise ValueError(f"{args.out} holds no run to resume (no config.yaml)")
        cfg = load_config(saved, args.overrides)
    else:
        cfg = load_config(args.config, args.overrides)
    metrics = train_run(cfg, args.out, progress=not args.no_progress, resume=args.resume)
    if distributed.launched():
        distributed.shutdown()
        if not metrics:  # not rank 0: rank 0 prints
            return 0
    print(json.dumps(metrics["test"], indent=2))
    print(f"run written to {args.out}")
    return 0
