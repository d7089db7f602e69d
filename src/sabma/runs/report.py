"""``report.md`` and ``reliability.png`` of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sabma.runs.figures import pyplot, save_figure
from sabma.runs.files import atomic_write_text
from sabma.runs.folder import REPORT, read_metrics
from sabma.runs.uncertainty_report import ood_lines, selective_lines


def reliability_bins(probs: Tensor, labels: Tensor, bins: int = 15) -> dict[str, list[float]]:
    """Per-bin count, mean confidence and accuracy (the same bins as the ECE)."""
    confidence, predicted = probs.double().max(dim=1)
    index = (torch.ceil(confidence * bins).long() - 1).clamp(0, bins - 1)
    count = torch.bincount(index, minlength=bins).double()
    conf = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, confidence)
    acc = torch.zeros(bins, dtype=torch.float64).index_add_(
        0, index, (predicted == labels).double()
    )
    safe = count.clamp_min(1)
    return {
        "count": count.tolist(),
        "confidence": (conf / safe).tolist(),
        "accuracy": (acc / safe).tolist(),
    }


def write_reliability_plot(
    path: Path, curves: dict[str, tuple[Tensor, Tensor]], bins: int = 15
) -> None:
    """A reliability diagram with one line per predictive (name → (probs, labels))."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for name, (probs, labels) in curves.items():
        b = reliability_bins(probs, labels, bins)
        keep = [i for i, c in enumerate(b["count"]) if c > 0]
        ax.plot(
            [b["confidence"][i] for i in keep],
            [b["accuracy"][i] for i in keep],
            marker="o",
            markersize=3,
            label=name,
        )
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Reliability diagram (test set)")
    save_figure(fig, path)


def metrics_table(rows: dict[str, dict[str, float]]) -> str:
    lines = ["| predictive | ACC | NLL | ECE | Brier |", "|---|---|---|---|---|"]
    for name, m in rows.items():
        lines.append(
            f"| {name} | {m['acc']:.4f} | {m['nll']:.4f} | {m['ece']:.4f} | {m['brier']:.4f} |"
        )
    return "\n".join(lines)


def write_report(path: Path, metrics: dict[str, Any]) -> None:
    """A Markdown summary of ``metrics.json`` that embeds ``reliability.png``."""
    test = metrics["test"]
    parts = [
        f"# Run: {metrics['method']} on {metrics['dataset']} ({metrics['shots']}-shot), "
        f"seed {metrics['seed']}",
        "",
        f"Backbone `{metrics['backbone']}`, Bayesian subset `{metrics['subset']}` "
        f"(d = {metrics['dim']}), BMA samples S = {metrics['samples']}.",
        "",
        "## Test",
        "",
        metrics_table(test),
        "",
        "## Validation",
        "",
        metrics_table(metrics["val"]),
        "",
        f"Training {metrics['timing']['train_s']:.1f} s, "
        f"evaluation {metrics['timing']['eval_s']:.1f} s.",
        "",
        "![reliability diagram](reliability.png)",
        "",
    ]
    if "temperature" in metrics:
        parts.insert(
            -3,
            f"Temperature fitted on the validation predictive: T = {metrics['temperature']:.3f}.\n",
        )
    if "posterior" in metrics:
        parts.insert(-3, _posterior_line(metrics["posterior"]))
    for line in metrics.get("fit", {}).get("warnings", []):
        parts.insert(-3, f"**Warning — {line}.**\n")
    parts += selective_lines(metrics) + ood_lines(metrics)
    parts += _shift_section(metrics) + _sharpness_section(metrics) + _figures(path.parent)
    atomic_write_text(path, "\n".join(parts))


def _posterior_line(shape: dict[str, Any]) -> str:
    gains = ", ".join(f"{g:.2f}" for g in shape["factor_gain"]) or "none"
    return (
        f"Posterior shape: σ 1st / 50th / 99th percentile {shape['std_p1']:.3g} / "
        f"{shape['std_p50']:.3g} / {shape['std_p99']:.3g} (spread {shape['std_spread']:.2f}); "
        f"the low-rank factor holds {shape['factor_share']:.2%} of the total variance and adds, "
        f"along each of its columns, {gains} × the diagonal's variance there.\n"
    )


def refresh_report(run_dir: Path) -> None:
    """Rewrite a run's report.md from its metrics.json and the figures in its directory."""
    metrics = read_metrics(run_dir)
    write_report(run_dir / REPORT, metrics)


def _shift_section(metrics: dict[str, Any]) -> list[str]:
    shift = metrics.get("shift")
    if shift is None:
        return []
    rows = {"clean": shift["clean"], **{f"severity {s}": v for s, v in shift["mean"].items()}}
    lines = [
        "## Distribution shift",
        "",
        f"Mean over {len(shift['corruptions'])} corruptions ({', '.join(shift['corruptions'])}), "
        f"first {shift['size']} test images:",
        "",
        metrics_table(rows),
        "",
    ]
    at_mean = shift.get("at_mean")
    if at_mean is not None:
        rows = {
            "clean": at_mean["clean"],
            **{f"severity {s}": v for s, v in at_mean["mean"].items()},
        }
        lines += ["The posterior mean on the same sets:", "", metrics_table(rows), ""]
    return lines


def _sharpness_section(metrics: dict[str, Any]) -> list[str]:
    sharp = metrics.get("sharpness")
    if sharp is None:
        return []

    def shown(value: float | None) -> str:
        return "failed" if value is None else f"{value:.4g}"

    lines = [
        "## Sharpness",
        "",
        f"Training-loss Hessian over the subset at {sharp['samples']} posterior sample(s), "
        f"{sharp['images']} training images: mean λ_max {shown(sharp['lambda_max'])}, "
        f"mean λ_1/λ_{sharp['top_k']} {shown(sharp['ratio_1_k'])}, "
        f"mean trace {shown(sharp['trace'])}.",
        "",
    ]
    if "at_mean" in sharp:
        centre = sharp["at_mean"]
        lines += [
            f"At the posterior mean: λ_max {shown(sharp['mean_lambda_max'])}, "
            f"trace {shown(centre['trace'])}.",
            "",
        ]
    if sharp["failed"]:
        lines += [f"Failed solves (not averaged): {sharp['failed']}", ""]
    return lines


def _figures(run_dir: Path) -> list[str]:
    figures = {
        "flatness.png": "## Flat-vs-sharp BMA",
        "landscape.png": "## Loss landscape",
    }
    lines: list[str] = []
    for name, title in figures.items():
        if (run_dir / name).is_file():
            lines += [title, "", f"![{title[3:]}]({name})", ""]
    return lines
