"""``ood.md`` and ``selective.md`` of a benchmark folder: OOD detection and selective prediction
of every method, mean ± std over seeds, and per-seed paired differences against SA-BMA.

Rows are methods (their predictive; SA-BMA also as its own posterior mean). OOD columns: the
AUROC of each score on each OOD set and, per set, the method's best score (the one with the
highest mean AUROC over seeds) with its AUROC and FPR95; selective columns: AURC and
accuracy at 90 % coverage for both confidences. Everything raw and temperature-scaled (TS).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from sabma.runs.benchmark_folder import write_benchmark_report
from sabma.runs.files import atomic_write_text
from sabma.runs.tables import mean_std_cell
from sabma.runs.uncertainty_report import SCORE_NAMES

REFERENCE = "sabma"
MEAN_ROW = "sabma (posterior mean)"

Runs = list[tuple[str, int, dict[str, Any]]]  # (method, seed, metrics)


def _rows(runs: Runs, section: str, mean_key: str) -> dict[str, dict[int, Any]]:
    """{row: {seed: the run's section for that predictive}} (SA-BMA's mean as its own row)."""
    rows: dict[str, dict[int, Any]] = {}
    for method, seed, metrics in runs:
        found = metrics.get(section)
        if not found:
            continue
        rows.setdefault(method, {})[seed] = found["bma"]
        if method == REFERENCE and mean_key in found:
            rows.setdefault(MEAN_ROW, {})[seed] = found[mean_key]
    return rows


def _paired(values: dict[str, dict[int, float]], better: str) -> list[str]:
    """Lines of per-seed differences (row − SA-BMA) of one figure; ``better`` says which sign
    favours SA-BMA."""
    ref = values.get(REFERENCE, {})
    lines = []
    for row, by_seed in values.items():
        if row == REFERENCE:
            continue
        seeds = sorted(set(by_seed) & set(ref))
        if not seeds:
            continue
        diffs = [ref[s] - by_seed[s] for s in seeds]
        shown = " / ".join(f"{d:+.3f}" for d in diffs)
        lines.append(f"| {row} | {shown} | {statistics.mean(diffs):+.3f} |")
    if not lines:
        return []
    return [
        "",
        f"SA-BMA − the row, per seed ({better} favours SA-BMA), and the mean:",
        "",
        "| against | per seed | mean |",
        "|---|---|---|",
        *lines,
    ]


def ood_table(runs: Runs) -> str:
    rows = _rows(runs, "ood", "at_mean")
    if not rows:
        return ""
    first = next(iter(next(iter(rows.values())).values()))
    sets = list(first["raw"])
    parts = ["# Out-of-distribution detection: AUROC of each score, mean ± std over seeds", ""]
    for kind, title in (("raw", "raw"), ("ts", "temperature-scaled (TS)")):
        for name in sets:
            scores = [
                s
                for s in SCORE_NAMES
                if any(s in r[kind][name] for v in rows.values() for r in v.values() if kind in r)
            ]
            if not scores:
                continue
            parts += [
                f"## {name}, {title}",
                "",
                "| method | "
                + " | ".join(SCORE_NAMES[s] for s in scores)
                + " | best score | its AUROC | its FPR95 |",
                "|---|" + "---|" * (len(scores) + 3),
            ]
            best_auroc: dict[str, dict[int, float]] = {}
            for row, by_seed in rows.items():
                found = {seed: r[kind][name] for seed, r in by_seed.items() if kind in r}
                if not found:
                    continue
                cells = [
                    mean_std_cell([f[s]["auroc"] for f in found.values() if s in f]) for s in scores
                ]
                means = {
                    s: statistics.mean(f[s]["auroc"] for f in found.values())
                    for s in scores
                    if all(s in f for f in found.values())
                }
                best = max(means, key=lambda s: means[s])
                best_auroc[row] = {seed: f[best]["auroc"] for seed, f in found.items()}
                cells += [
                    SCORE_NAMES[best],
                    mean_std_cell(list(best_auroc[row].values())),
                    mean_std_cell([f[best]["fpr95"] for f in found.values()]),
                ]
                parts.append(f"| {row} | " + " | ".join(cells) + " |")
            parts += _paired(best_auroc, "a positive difference of the best score's AUROC")
            parts.append("")
    return "\n".join(parts)


def selective_table(runs: Runs) -> str:
    rows = _rows(runs, "selective", "mean")
    if not rows:
        return ""
    parts = ["# Selective prediction on the test split, mean ± std over seeds", ""]
    for kind, title in (("raw", "raw"), ("ts", "temperature-scaled (TS)")):
        parts += [
            f"## {title}",
            "",
            "| method | AURC (max-prob.) | AURC (−entropy) | E-AURC (max-prob.) | "
            "acc @ 90 % (max-prob.) | acc @ 90 % (−entropy) |",
            "|---|---|---|---|---|---|",
        ]
        aurc: dict[str, dict[int, float]] = {}
        for row, by_seed in rows.items():
            found = {seed: r[kind] for seed, r in by_seed.items() if kind in r}
            if not found:
                continue
            aurc[row] = {seed: f["msp"]["aurc"] for seed, f in found.items()}
            cells = [
                mean_std_cell([f[c][m] for f in found.values()])
                for c, m in (
                    ("msp", "aurc"),
                    ("entropy", "aurc"),
                    ("msp", "e_aurc"),
                    ("msp", "acc_at_90"),
                    ("entropy", "acc_at_90"),
                )
            ]
            parts.append(f"| {row} | " + " | ".join(cells) + " |")
        parts += _paired(aurc, "a negative difference of the AURC (max-prob.)")
        parts.append("")
    return "\n".join(parts)


def write_uncertainty_tables(out: Path, runs: Runs) -> None:
    """``ood.md`` (when the runs have OOD sections) and ``selective.md`` in ``out``."""
    for name, text in (("ood.md", ood_table(runs)), ("selective.md", selective_table(runs))):
        if text:
            atomic_write_text(out / name, text)
    write_benchmark_report(out)
