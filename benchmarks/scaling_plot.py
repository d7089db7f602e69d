"""The figure of :mod:`benchmarks.scaling`: cost per epoch against SAM's as the training set
and the Bayesian subset grow, and the BMA's cost against S."""

from __future__ import annotations

import re
from typing import Any

from sabma.variance.options import VarianceOptions

_KEY = re.compile(r"(\d+) shots, (.+), (\d+)px")


def plot(stored: dict[str, Any], path: str) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = {
        match.groups(): v
        for k, v in stored["cells"].items()
        if (match := _KEY.fullmatch(k)) is not None  # the image cells (text: the table only)
    }
    every = VarianceOptions().refresh_epochs
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))

    def ratios(c: dict[str, Any]) -> dict[str, float]:
        sam = c["SAM"]
        return {
            "SGD": c["SGD"] / sam,
            "IVON": c["IVON"] / sam,
            "SA-BMA (no refresh)": c["SA-BMA"] / sam,
            f"SA-BMA, refresh every {every} epochs": (c["SA-BMA"] + c["refresh"] / every) / sam,
            "SA-BMA, refresh every epoch": (c["SA-BMA"] + c["refresh"]) / sam,
        }

    by_shots = sorted(
        ((int(s), c) for (s, sub, _), c in cells.items() if sub == "norm+head"),
        key=lambda t: t[0],
    )
    smallest = min(int(s) for s, _, _ in cells)
    by_subset = sorted(
        ((c["d"], sub, c) for (s, sub, _), c in cells.items() if int(s) == smallest),
        key=lambda t: t[0],
    )
    for ax, xs, rows, label in (
        (axes[0], [10 * s for s, _ in by_shots], [ratios(c) for _, c in by_shots],
         "training examples (norm+head)"),
        (axes[1], [d for d, _, _ in by_subset], [ratios(c) for _, _, c in by_subset],
         f"Bayesian parameters d ({smallest} shots: "
         + ", ".join(sub for _, sub, _ in by_subset) + ")"),
    ):  # fmt: skip
        for name in rows[0]:
            style = "--" if "every epoch" in name else "-"
            ax.plot(xs, [r[name] for r in rows], style, marker="o", label=name)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_yticks([0.5, 1, 1.5, 2, 3, 5, 10, 15])
        ax.set_xlabel(label)
        ax.set_ylabel("time per epoch / SAM's")
    axes[0].legend(fontsize=7)
    bma = stored.get("bma", {})
    if bma:
        forward = bma["forward"]
        s_values = [(int(k[2:]), v) for k, v in bma.items() if k.startswith("S=")]
        axes[2].plot([s for s, _ in s_values], [v / forward for _, v in s_values], marker="o")
        axes[2].plot([s for s, _ in s_values], [s for s, _ in s_values], ":", color="grey",
                     label="S forward passes")  # fmt: skip
        axes[2].set_xscale("log")
        axes[2].set_yscale("log")
        axes[2].set_xlabel("BMA draws S (norm+head, batch 25)")
        axes[2].set_ylabel("time / one forward pass")
        axes[2].legend(fontsize=7)
    cores = stored.get("machine", {}).get("cpu_count", "?")
    fig.suptitle(f"cost against SAM's: EfficientNet-Lite0 at 32 px, {cores}-core CPU", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
