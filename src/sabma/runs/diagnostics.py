"""Warnings a run's report gives when the trained predictive is clearly not fitted.

Two signs, both read from what a run already has:

* the temperature that scaling fits on validation: T < 0.8 means the predictive is too soft
  (under-confident: under-fitted, or more posterior noise than the data bear), T > 1.25 too sharp
  (over-confident, over-fitted);
* the training loss at the selected state against the validation NLL: a model whose training
  loss is not clearly below its held-out loss has not fitted its training set — unless later
  epochs did fit it while the validation NLL got no better: then early stopping kept an early
  state of a task that over-fits within a few epochs, and a longer budget would not help (this
  is what the 32-shot text task does: docs/results.md).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from sabma.runs.folder import TRAIN_LOG

UNDER_CONFIDENT, OVER_CONFIDENT = 0.8, 1.25
#: training loss above this multiple of a uniform guess's (log C): training was unstable
UNSTABLE = 1.5
#: training loss above this fraction of the validation NLL: not fitted
UNDER_FITTED = 0.8


def training_losses(log_path: Path) -> tuple[float, float | None] | None:
    """The training loss of the epoch the run kept — the best validation NLL (the last epoch
    when no epoch was evaluated) — and the lowest training loss of the same member's later
    epochs (None when there are none); None without a log."""
    if not log_path.is_file():
        return None
    entries = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    if not entries:
        return None
    evaluated = [e for e in entries if "val_nll" in e]
    chosen = min(evaluated, key=lambda e: e["val_nll"]) if evaluated else entries[-1]
    position = entries.index(chosen)
    later = [
        float(e["loss"])
        for e in entries[position + 1 :]
        if e.get("member", 0) == chosen.get("member", 0)
    ]
    return float(chosen["loss"]), min(later) if later else None


def selected_train_loss(log_path: Path) -> float | None:
    """The training loss of the epoch the run kept (see :func:`training_losses`)."""
    losses = training_losses(log_path)
    return None if losses is None else losses[0]


def fit_warnings(
    train_loss: float | None,
    val_nll: float,
    temperature: float | None,
    later_train_loss: float | None = None,
    less_noise: str = "",
    num_classes: int | None = None,
) -> list[str]:
    """One line per sign that the predictive is not fitted (empty when none);
    ``later_train_loss``: the lowest training loss after the kept epoch; ``less_noise``: the
    method's setting that narrows its posterior's noise, which the under-confident advice names
    (:attr:`sabma.methods.base.Method.less_noise`; "" for none). A training loss far
    above a uniform guess's (``num_classes`` given) is the one line: the run was unstable, and
    the temperature and the training-vs-validation signs would only contradict each other."""
    if num_classes and train_loss is not None and train_loss > UNSTABLE * math.log(num_classes):
        return [
            f"unstable: the training loss at the kept state ({train_loss:.3f}) is far above a "
            f"uniform guess's (log {num_classes} = {math.log(num_classes):.3f}): the learning "
            "rate is too large — try a smaller optim.lr (e.g. a tenth) or a learning-rate "
            "search (optim.lr_grid)"
        ]
    lines = []
    if temperature is not None and temperature < UNDER_CONFIDENT:
        noise = less_noise
        lines.append(
            f"under-confident: temperature scaling fits T = {temperature:.2f} < 1 on validation "
            "(under-fitted, or more posterior noise than the data bear): try a larger "
            "optim.lr or a learning-rate search (optim.lr_grid), "
            + (f"a longer optim.epochs, or {noise}" if noise else "or a longer optim.epochs")
        )
    if temperature is not None and temperature > OVER_CONFIDENT:
        lines.append(
            f"over-confident: temperature scaling fits T = {temperature:.2f} > 1 on validation "
            "(over-fitted): try eval.patience, a smaller optim.lr or a learning-rate search"
        )
    fitted_later = later_train_loss is not None and later_train_loss <= UNDER_FITTED * val_nll
    if train_loss is not None and train_loss > UNDER_FITTED * val_nll and fitted_later:
        lines.append(
            f"stopped early: the kept state's training loss ({train_loss:.3f}) is close to the "
            f"validation NLL ({val_nll:.3f}), and later epochs fitted the training set (loss "
            f"{later_train_loss:.3f}) without a better validation NLL — the task over-fits "
            "within a few epochs; a longer budget or a larger optim.lr will not help, more "
            "training data or a stronger prior may"
        )
    elif train_loss is not None and train_loss > UNDER_FITTED * val_nll:
        lines.append(
            f"under-fitted: the training loss at the kept state ({train_loss:.3f}) is not "
            f"clearly below the validation NLL ({val_nll:.3f}): try a larger optim.lr, a "
            "learning-rate search (optim.lr_grid) or a longer optim.epochs"
        )
    return lines


def diagnostics(
    run_dir: Path, metrics: dict[str, Any], num_classes: int | None = None, less_noise: str = ""
) -> dict[str, Any]:
    """The ``"fit"`` section of metrics.json: the kept state's training loss and the warnings."""
    losses = training_losses(run_dir / TRAIN_LOG)
    train_loss, later = losses if losses is not None else (None, None)
    warnings = fit_warnings(
        train_loss,
        metrics["val"]["bma"]["nll"],
        metrics.get("temperature"),
        later,
        less_noise,
        num_classes,
    )
    return {"train_loss": train_loss, "later_train_loss": later, "warnings": warnings}
