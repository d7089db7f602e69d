"""Summary tables over seeds."""

from __future__ import annotations

import statistics


def mean_std_table(
    rows: dict[str, list[dict[str, float]]],
    metrics: tuple[str, ...] = ("acc", "nll", "ece", "brier"),
    signed: bool = False,
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
            mean = statistics.mean(values)
            cells.append(f"{mean:+.3f} ± {spread:.3f}" if signed else f"{mean:.3f} ± {spread:.3f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
