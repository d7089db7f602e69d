"""The embedded default: 10-shot Fashion-MNIST from EfficientNet-Lite0, SA-BMA against SGD
fine-tuning of the same subset, with a frozen-feature linear probe for reference."""

from __future__ import annotations

import json
import logging
import statistics
from pathlib import Path
from typing import Any

from sabma.config import Config, config_from_dict, dump_config
from sabma.data.tasks import load_task
from sabma.models import build_backbone
from sabma.runs.files import atomic_write_json
from sabma.transfer.pipeline import train_run
from sabma.transfer.probe import linear_probe

log = logging.getLogger(__name__)

#: (row label, method, predictive) of the demo table.
ROWS = (
    ("SA-BMA (BMA)", "sabma", "bma"),
    ("SA-BMA (posterior mean)", "sabma", "mean"),
    ("SGD", "sgd", "bma"),
    ("linear probe (frozen features)", "probe", "test"),
)
QUICK = ["optim.epochs=20", "data.test_size=1000"]


def demo_config(method: str, seed: int, quick: bool, overrides: list[str]) -> Config:
    return config_from_dict(
        {}, [f"method.name={method}", f"seed={seed}", *(QUICK if quick else []), *overrides]
    )


def _run_or_reuse(cfg: Config, out: Path, progress: bool) -> dict[str, Any]:
    """Train into ``out``, or reuse a finished run there with the same configuration."""
    metrics_file = out / "metrics.json"
    if metrics_file.is_file():
        if (out / "config.yaml").read_text() != dump_config(cfg):
            raise ValueError(
                f"{out} holds a finished run with another configuration; choose another --out"
            )
        log.info("reusing the finished run in %s", out)
        return json.loads(metrics_file.read_text())
    return train_run(cfg, out, progress=progress)


def run_demo(
    out: Path, seeds: int, quick: bool, overrides: list[str], progress: bool = True
) -> dict[str, list[dict[str, float]]]:
    """Run every (method, seed) into ``out/<method>-seed<k>`` and the probe; returns, per table
    row, the test metrics of each seed. Also writes ``out/demo.json``."""
    rows: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in ROWS}
    for seed in range(seeds):
        for method in ("sabma", "sgd"):
            cfg = demo_config(method, seed, quick, overrides)
            metrics = _run_or_reuse(cfg, out / f"{method}-seed{seed}", progress)
            for label, row_method, predictive in ROWS:
                if row_method == method:
                    rows[label].append(metrics["test"][predictive])
        cfg = demo_config("sgd", seed, quick, overrides)
        task = load_task(cfg.data, seed)
        backbone = build_backbone(cfg.model.backbone, task.num_classes, cfg.model.weights)
        probe = linear_probe(
            backbone.model,
            backbone.head,
            task.x_train,
            task.y_train,
            task.x_val,
            task.y_val,
            task.x_test,
            task.y_test,
            task.num_classes,
        )
        rows["linear probe (frozen features)"].append(probe["test"])  # type: ignore[arg-type]
    atomic_write_json(out / "demo.json", rows)
    return rows


def format_rows(
    rows: dict[str, list[dict[str, float]]],
    metrics: tuple[str, ...] = ("acc", "nll", "ece", "brier"),
) -> str:
    """A Markdown table of mean ± std over seeds per row."""
    lines = [
        "| method | " + " | ".join(m.upper() for m in metrics) + " |",
        "|" + "---|" * (len(metrics) + 1),
    ]
    for label, runs in rows.items():
        cells = []
        for metric in metrics:
            values = [r[metric] for r in runs]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.3f} ± {spread:.3f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
