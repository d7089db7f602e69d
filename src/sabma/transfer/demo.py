"""The embedded default: 10-shot Fashion-MNIST from EfficientNet-Lite0, SA-BMA against SGD
fine-tuning of the same subset, with a frozen-feature linear probe for reference."""

from __future__ import annotations

import logging
from pathlib import Path

from sabma.config import Config, config_from_dict
from sabma.data.tasks import load_task
from sabma.models import build_backbone
from sabma.runs.files import atomic_write_json
from sabma.transfer.pipeline import run_or_reuse
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


def run_demo(
    out: Path, seeds: int, quick: bool, overrides: list[str], progress: bool = True
) -> dict[str, list[dict[str, float]]]:
    """Run every (method, seed) into ``out/<method>-seed<k>`` and the probe; returns, per table
    row, the test metrics of each seed. Also writes ``out/demo.json``."""
    rows: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in ROWS}
    for seed in range(seeds):
        for method in ("sabma", "sgd"):
            cfg = demo_config(method, seed, quick, overrides)
            metrics = run_or_reuse(cfg, out / f"{method}-seed{seed}", progress)
            for label, row_method, predictive in ROWS:
                if row_method == method:
                    rows[label].append(metrics["test"][predictive])
        cfg = demo_config("sgd", seed, quick, overrides)
        task = load_task(cfg, seed)
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
