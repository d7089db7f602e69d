"""A run folder: the names of its files, and the one way to read and add to its metrics.

A run folder holds ``config.yaml`` (resolved), ``train_log.jsonl``, ``posterior.safetensors``
with ``posterior.json`` (its metadata), ``reliability.png``, ``report.md`` and, written last,
``metrics.json`` — whose presence marks the run as finished. ``checkpoint.safetensors`` exists
while it trains; ``lr_search/`` and ``lr_search.json`` when its learning rate (and knob) was
searched; ``flatness.*`` and ``landscape.*`` after those analyses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sabma.runs.files import atomic_write_json, read_json

CONFIG = "config.yaml"
METRICS = "metrics.json"
SHIFT_PROGRESS = "shift.partial.json"  # the sets of an unfinished `evaluate --shift`
OOD_PROGRESS = "ood.partial.json"  # the sets of an unfinished `evaluate --ood`
OOD_FIGURE = "ood.png"  # ROC curves of the OOD scores
RISK_COVERAGE = "risk_coverage.png"  # selective prediction on the test split
POSTERIOR = "posterior.safetensors"
POSTERIOR_META = "posterior.json"
TRAIN_LOG = "train_log.jsonl"
REPORT = "report.md"
RELIABILITY = "reliability.png"
CHECKPOINT = "checkpoint.safetensors"
SEARCH_DIR = "lr_search"
SEARCH_RESULT = "lr_search.json"
#: metrics.json sections written by other steps (the search of the learning rate and knob,
#: evaluate --shift, evaluate --ood, sharpness): a re-evaluation that does not redo them keeps them
CARRIED_SECTIONS = ("lr", "lr_search", "knob", "shift", "ood", "sharpness")


def is_finished(run_dir: Path) -> bool:
    return (run_dir / METRICS).is_file()


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """The run's metrics.json (FileNotFoundError with the reason when it has none)."""
    path = run_dir / METRICS
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} holds no finished run (no {METRICS})")
    return read_json(path, f"`sabma evaluate {run_dir}` writes it again from the posterior")


def add_section(run_dir: Path, name: str, value: Any) -> None:
    """Set one section of the run's metrics.json (atomically; the others are kept)."""
    metrics = read_metrics(run_dir)
    metrics[name] = value
    atomic_write_json(run_dir / METRICS, metrics)
