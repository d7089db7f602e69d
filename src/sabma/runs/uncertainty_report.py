"""The OOD-detection and selective-prediction parts of a run's report: ``ood.png`` (ROC curves),
``risk_coverage.png`` and their tables in ``report.md``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from sabma.runs.figures import pyplot, save_figure

SCORE_NAMES = {
    "msp": "max-probability",
    "entropy": "entropy",
    "energy": "energy",
    "mi": "mutual information",
}
CONFIDENCE_NAMES = {"msp": "max-probability", "entropy": "−entropy"}


def write_roc_plot(path: Path, curves: dict[str, dict[str, tuple[Any, Any]]]) -> None:
    """One panel per OOD set, one ROC curve per score (OOD as positives)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 4.2), dpi=120)
    axes = [axes] if len(curves) == 1 else list(axes)
    for ax, (name, by_score) in zip(axes, curves.items(), strict=True):
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        for score, (fpr, tpr) in by_score.items():
            ax.plot(fpr, tpr, label=SCORE_NAMES.get(score, score))
        ax.set_xlabel("false-positive rate (test inputs flagged)")
        ax.set_ylabel("true-positive rate (OOD inputs flagged)")
        ax.set_title(f"OOD set: {name}")
        ax.legend(loc="lower right", fontsize=8)
    save_figure(fig, path)


def write_risk_coverage_plot(path: Path, curves: dict[str, tuple[Tensor, Tensor]]) -> None:
    """Selective risk against coverage, one line per (predictive, confidence)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.2), dpi=120)
    for name, (coverage, risk) in curves.items():
        ax.plot(coverage.numpy(), risk.numpy(), label=name)
    ax.set_xlabel("coverage (share of test inputs answered)")
    ax.set_ylabel("selective risk (error rate of the answered)")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Risk–coverage (test set)")
    save_figure(fig, path)


def selective_lines(metrics: dict[str, Any]) -> list[str]:
    section = metrics.get("selective")
    if not section:
        return []
    lines = [
        "## Selective prediction (test set)",
        "",
        "| predictive | confidence | AURC | E-AURC | acc @ 80 % | acc @ 90 % | acc @ 95 % |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, kinds in section.items():
        for kind, by_conf in kinds.items():
            for conf, m in by_conf.items():
                label = f"{name}{' (TS)' if kind == 'ts' else ''}"
                lines.append(
                    f"| {label} | {CONFIDENCE_NAMES.get(conf, conf)} | {m['aurc']:.4f} | "
                    f"{m['e_aurc']:.4f} | {m['acc_at_80']:.4f} | {m['acc_at_90']:.4f} | "
                    f"{m['acc_at_95']:.4f} |"
                )
    return [*lines, "", "![risk-coverage](risk_coverage.png)", ""]


def ood_lines(metrics: dict[str, Any]) -> list[str]:
    section = metrics.get("ood")
    if not section:
        return []
    sets = ", ".join(
        f"{name} = {info['source']} ({info['size']})" for name, info in section["sets"].items()
    )
    lines = [
        "## Out-of-distribution detection",
        "",
        f"Test split ({section['test_size']} inputs) against {sets}.",
        "",
        "| predictive | set | score | AUROC | AUPR-in | AUPR-out | FPR95 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("bma", "at_mean"):
        for kind, by_set in section.get(name, {}).items():
            for ood, by_score in by_set.items():
                for score, m in by_score.items():
                    label = f"{name}{' (TS)' if kind == 'ts' else ''}"
                    lines.append(
                        f"| {label} | {ood} | {SCORE_NAMES.get(score, score)} | "
                        f"{m['auroc']:.4f} | {m['aupr_in']:.4f} | {m['aupr_out']:.4f} | "
                        f"{m['fpr95']:.4f} |"
                    )
    return [*lines, "", "![ROC curves](ood.png)", ""]
