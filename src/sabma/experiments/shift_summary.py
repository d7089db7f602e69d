"""``shift.md`` and ``shift.png`` of a benchmark folder: every method's metrics on the corrupted
test sets (``sabma evaluate FOLDER --shift``) against the severity, mean ± std over seeds, and
per-seed paired differences."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sabma.experiments.benchmark import METRICS, REFERENCE, TS_METRICS
from sabma.runs.benchmark_folder import benchmark_runs, write_benchmark_report
from sabma.runs.figures import pyplot, save_figure
from sabma.runs.files import atomic_write_text
from sabma.runs.folder import read_metrics
from sabma.runs.tables import mean_std_cell
from sabma.shift.evaluate import corrupted_sets

ShiftSections = list[tuple[str, dict[str, Any]]]  # (run relative to the folder, its metrics)


def shift_sections(folder: Path) -> ShiftSections:
    """Every run of ``folder`` that has a shift section, with its metrics (each file read once)."""
    sections = []
    for run in benchmark_runs(folder):
        metrics = read_metrics(run)
        if metrics.get("shift") is not None:
            sections.append((str(run.relative_to(folder)), metrics))
    return sections


def shift_by_seed(
    sections: ShiftSections, at_mean: bool = False
) -> dict[str, dict[int, dict[int, dict[str, float]]]]:
    """method → seed → severity (0 = clean) → metrics averaged over the corruptions, for every
    run in ``sections``; ``at_mean``: the posterior mean's (``shift.at_mean``), for the runs
    that have it."""
    table: dict[str, dict[int, dict[int, dict[str, float]]]] = {}
    for _, metrics in sections:
        shift = metrics["shift"].get("at_mean") if at_mean else metrics["shift"]
        if shift is None:
            continue
        per_severity = {0: shift["clean"], **{int(s): v for s, v in shift["mean"].items()}}
        table.setdefault(metrics["method"], {})[int(metrics["seed"])] = {
            severity: {m: values[m] for m in (*METRICS, *TS_METRICS) if m in values}
            for severity, values in per_severity.items()
        }
    return table


def shift_curves(
    by_seed: dict[str, dict[int, dict[int, dict[str, float]]]],
) -> dict[str, dict[int, dict[str, list[float]]]]:
    """method → severity (0 = clean) → metric → one value per seed (mean over corruptions)."""
    curves: dict[str, dict[int, dict[str, list[float]]]] = {}
    for method, seeds in by_seed.items():
        for _, per_severity in sorted(seeds.items()):
            for severity, values in per_severity.items():
                for m, value in values.items():  # TS metrics: runs evaluated with TS only
                    curves.setdefault(method, {}).setdefault(severity, {}).setdefault(m, []).append(
                        value
                    )
    return curves


def write_shift_summary(folder: Path) -> None:
    """``shift.md`` (mean ± std over seeds of the corruption-averaged metrics per severity, the
    seeds each method's row covers; the NLL differences to :data:`REFERENCE`, and of each
    posterior's BMA to its own mean, on the same seed) and ``shift.png`` (ACC / NLL / ECE
    against severity, one line per method)."""
    sections = shift_sections(folder)
    if not sections:
        raise ValueError(f"no run in {folder} has a shift section; run 'sabma evaluate --shift'")
    by_seed = shift_by_seed(sections)
    curves = shift_curves(by_seed)
    severities = sorted({s for method in curves.values() for s in method})
    lines = ["# Corruption benchmark: mean over corruptions, mean ± std over seeds", ""]
    lines += _mixed_settings(sections)
    present = {m for method in curves.values() for values in method.values() for m in values}
    for metric in ("acc", "nll", "ts_nll", "ece", "ts_ece"):
        if metric not in present:
            continue
        lines += _severity_table_head(_metric_title(metric), severities)
        for name, by_severity in sorted(curves.items()):
            cells = [mean_std_cell(by_severity.get(s, {}).get(metric, [])) for s in severities]
            seeds = ",".join(str(seed) for seed in sorted(by_seed[name]))
            lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + " |")
        lines.append("")
    if REFERENCE in by_seed:
        others = {name: by_seed[REFERENCE] for name in by_seed if name != REFERENCE}
        label = f"method − {REFERENCE} on the same seed"
        lines += _shift_paired(by_seed, others, label, severities, present)
    label = "BMA − the same posterior's mean, same seed (what averaging buys)"
    at_mean = shift_by_seed(sections, at_mean=True)
    lines += _shift_paired(by_seed, at_mean, label, severities, present)
    lines.append("![metrics against severity](shift.png)")
    atomic_write_text(folder / "shift.md", "\n".join(lines) + "\n")
    _plot_shift(folder / "shift.png", curves, severities)
    write_benchmark_report(folder)


def _mixed_settings(sections: ShiftSections) -> list[str]:
    """A warning line when the runs' shift sections measured different corrupted sets (their
    means and differences then compare unlike things); none when they agree."""
    groups: dict[tuple[tuple[str, ...], int], list[str]] = {}
    for run, metrics in sections:
        groups.setdefault(corrupted_sets(metrics["shift"]), []).append(run)
    if len(groups) < 2:
        return []
    parts = "; ".join(
        f"{', '.join(names)} on {size} images: {', '.join(runs)}"
        for (names, size), runs in sorted(groups.items())
    )
    return [f"**Warning: the runs measured different corrupted sets** ({parts}).", ""]


def _severity_table_head(title: str, severities: list[int]) -> list[str]:
    """A section title and the head of a table with a column per severity (0: clean)."""
    header = " | ".join("clean" if s == 0 else f"s{s}" for s in severities)
    return [
        f"## {title}",
        "",
        f"| method | seeds | {header} |",
        "|---" * (len(severities) + 2) + "|",
    ]


def _metric_title(metric: str) -> str:
    return metric.removeprefix("ts_").upper() + (" (TS)" if metric.startswith("ts_") else "")


PerSeed = dict[int, dict[int, dict[str, float]]]  # seed → severity → metrics


def _shift_paired(
    rows: dict[str, PerSeed],
    references: dict[str, PerSeed],
    label: str,
    severities: list[int],
    present: set[str],
) -> list[str]:
    """Tables of the NLL (raw, and TS where measured) of each row minus its reference
    (``references[row]``, called ``label``) on the same seed, mean ± std over the seeds both
    have; no lines when no row has a reference."""
    pairs = {
        name: (seeds, references[name], sorted(s for s in seeds if s in references[name]))
        for name, seeds in sorted(rows.items())
        if name in references
    }
    pairs = {name: pair for name, pair in pairs.items() if pair[2]}
    if not pairs:
        return []
    lines = []
    for metric in ("nll", "ts_nll"):
        if metric not in present:
            continue
        lines += _severity_table_head(f"{_metric_title(metric)}: {label}", severities)
        for name, (seeds, reference, shared) in pairs.items():
            cells = []
            for s in severities:
                deltas = [
                    seeds[seed][s][metric] - reference[seed][s][metric]
                    for seed in shared
                    if metric in seeds[seed].get(s, {}) and metric in reference[seed].get(s, {})
                ]
                cells.append(mean_std_cell(deltas, signed=True))
            lines.append(f"| {name} | {','.join(map(str, shared))} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _plot_shift(
    path: Path, curves: dict[str, dict[int, dict[str, list[float]]]], severities: list[int]
) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), dpi=120)
    for ax, metric in zip(axes, ("acc", "nll", "ece"), strict=True):
        for index, (name, by_severity) in enumerate(sorted(curves.items())):
            xs = [s for s in severities if metric in by_severity.get(s, {})]
            ys = [sum(by_severity[s][metric]) / len(by_severity[s][metric]) for s in xs]
            # distinct colours for up to 20 methods, dashes to tell the second ten apart
            style: dict[str, Any] = {
                "color": plt.get_cmap("tab20")(index % 20),
                "linestyle": "-" if index % 2 == 0 else "--",
            }
            if name == "sabma":
                style = {"color": "black", "linewidth": 2.5}
            ax.plot(xs, ys, marker="o", markersize=3, label=name, **style)
        ax.set_xticks(severities, ["clean" if s == 0 else str(s) for s in severities])
        ax.set_xlabel("severity")
        ax.set_title(metric.upper())
    axes[-1].legend(fontsize=7, ncol=2)
    save_figure(fig, path)
