"""Warnings a run's report gives when the trained predictive is clearly not fitted.

Two signs, both read from what a run already has:

* the temperature that scaling fits on validation: T < 0.8 means the predictive is too soft
  (under-confident: under-fitted, or more posterior noise than the data bear), T > 1.25 too sharp
  (over-confident, over-fitted);
* the training loss at the selected state against the validation NLL: a model whose training
  loss is not clearly below its held-out loss has not fitted its training set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sabma.runs.folder import TRAIN_LOG

UNDER_CONFIDENT, OVER_CONFIDENT = 0.8, 1.25
#: training loss above this fraction of the validation NLL: not fitted
UNDER_FITTED = 0.8


def selected_train_loss(log_path: Path) -> float | None:
    """The training loss of the epoch the run kept: the best validation NLL (the last epoch
    when no epoch was evaluated, or for methods that keep their final state anyway)."""
    if not log_path.is_file():
        return None
    entries = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    if not entries:
        return None
    evaluated = [e for e in entries if "val_nll" in e]
    chosen = min(evaluated, key=lambda e: e["val_nll"]) if evaluated else entries[-1]
    return float(chosen["loss"])


def fit_warnings(train_loss: float | None, val_nll: float, temperature: float | None) -> list[str]:
    """One line per sign that the predictive is not fitted (empty when none)."""
    lines = []
    if temperature is not None and temperature < UNDER_CONFIDENT:
        lines.append(
            f"under-confident: temperature scaling fits T = {temperature:.2f} < 1 on validation "
            "(under-fitted, or more posterior noise than the data bear): try a larger "
            "optim.lr or a learning-rate search (optim.lr_grid), a longer optim.epochs, or a "
            "lower method.temperature"
        )
    if temperature is not None and temperature > OVER_CONFIDENT:
        lines.append(
            f"over-confident: temperature scaling fits T = {temperature:.2f} > 1 on validation "
            "(over-fitted): try eval.patience, a smaller optim.lr or a learning-rate search"
        )
    if train_loss is not None and train_loss > UNDER_FITTED * val_nll:
        lines.append(
            f"under-fitted: the training loss at the kept state ({train_loss:.3f}) is not "
            f"clearly below the validation NLL ({val_nll:.3f}): try a larger optim.lr, a "
            "learning-rate search (optim.lr_grid) or a longer optim.epochs"
        )
    return lines


def diagnostics(run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """The ``"fit"`` section of metrics.json: the kept state's training loss and the warnings."""
    train_loss = selected_train_loss(run_dir / TRAIN_LOG)
    warnings = fit_warnings(train_loss, metrics["val"]["bma"]["nll"], metrics.get("temperature"))
    return {"train_loss": train_loss, "warnings": warnings}
