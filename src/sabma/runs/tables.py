"""Summary tables over seeds."""

from __future__ import annotations

import statistics
from typing import Any

#: column headings that are not the metric's name in capitals
HEADINGS = {
    "ts_nll": "NLL (TS)",
    "ts_ece": "ECE (TS)",
    "train_s": "TRAIN S",
    "mean_lambda_max": "LAMBDA_MAX AT MEAN",
    **{
        f"{name}_{score}": f"{name.upper()} AUROC ({label})"
        for name in ("near", "far")
        for score, label in (
            ("msp", "MSP"),
            ("entropy", "ENTROPY"),
            ("energy", "ENERGY"),
            ("mi", "MI"),
        )
    },
}


def mean_std_table(
    rows: dict[str, list[dict[str, float]]],
    metrics: tuple[str, ...] = ("acc", "nll", "ece", "brier"),
    signed: bool = False,
    seeds: dict[str, list[int]] | None = None,
) -> str:
    """A Markdown table of mean ± std over seeds per row (the mean alone for a single value; runs
    without a metric are left out of its cell); with ``seeds`` (row → its seeds), a column
    that says which seeds each row covers."""
    seed_heading = ["seeds"] if seeds is not None else []
    lines = [
        "| "
        + " | ".join(["method", *seed_heading, *(HEADINGS.get(m, m.upper()) for m in metrics)])
        + " |",
        "|" + "---|" * (len(metrics) + 1 + len(seed_heading)),
    ]
    for label, runs in rows.items():
        cells = [] if seeds is None else [",".join(str(s) for s in sorted(seeds[label]))]
        for metric in metrics:
            cells.append(mean_std_cell([r[metric] for r in runs if metric in r], signed))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mean_std_cell(values: list[float], signed: bool = False) -> str:
    """``mean ± std`` of ``values``; the mean alone for one value (no misleading ± 0.000);
    "–" for none."""
    if not values:
        return "–"
    mean = statistics.mean(values)
    shown = f"{mean:+.3f}" if signed else f"{mean:.3f}"
    return f"{shown} ± {statistics.stdev(values):.3f}" if len(values) > 1 else shown


def with_scaled(test: dict[str, Any], predictive: str) -> dict[str, float]:
    """A row's test metrics, with the temperature-scaled NLL and ECE as ``ts_nll``/``ts_ece``
    where the run has them (``<predictive>_ts``)."""
    row = dict(test[predictive])
    scaled = test.get(f"{predictive}_ts")
    if scaled is not None:
        row["ts_nll"], row["ts_ece"] = scaled["nll"], scaled["ece"]
    return row
