"""``sabma benchmark``: every (method, seed) as its own run, then tables and a plot.

Runs go to ``OUT/<method>/seed<k>``; a finished run (its ``metrics.json`` exists) with the same
configuration is reused, a half-written one is run again, so an interrupted benchmark resumes.
All methods share the configuration (data, splits, subset, budget, model selection) except
``method.name`` and ``seed``.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

from sabma.config import Config, config_from_dict, load_config
from sabma.experiments.uncertainty_tables import write_uncertainty_tables
from sabma.methods import METHODS
from sabma.ood.evaluate import OODOptions
from sabma.pipeline.grid import knob_unused
from sabma.pipeline.train import run_or_reuse
from sabma.runs.benchmark_folder import benchmark_runs, write_benchmark_report
from sabma.runs.figures import pyplot, save_figure
from sabma.runs.files import atomic_write_json, atomic_write_text
from sabma.runs.folder import read_metrics
from sabma.runs.tables import mean_std_cell, mean_std_table, with_scaled
from sabma.shift.evaluate import corrupted_sets

log = logging.getLogger(__name__)

METRICS = ("acc", "nll", "ece", "brier")
#: after temperature scaling (fitted on validation; Ashukha et al. 2020's calibrated NLL)
TS_METRICS = ("ts_nll", "ts_ece")
#: learning rates every method chooses from on its validation split (``--no-lr-search``: off)
LR_GRID = "[0.0003,0.001,0.003]"
QUICK = ["optim.epochs=10", "data.test_size=500", "eval.samples=10"]
REFERENCE = "sgd"  # the baseline of the paired-difference table


def parse_methods(text: str) -> list[str]:
    """``"all"`` or a comma-separated list of method names (checked)."""
    names = sorted(METHODS) if text.strip() == "all" else [m.strip() for m in text.split(",")]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(METHODS)} or 'all'")
    return names


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {text!r}") from None
    if not seeds:
        raise ValueError("--seeds needs at least one seed")
    return seeds


def run_benchmark(
    config: Path | None,
    methods: list[str],
    seeds: list[int],
    out: Path,
    overrides: list[str],
    quick: bool = False,
    progress: bool = True,
    lr_search: bool = False,
    knob_search: bool = False,
    ood: OODOptions | None = None,
) -> list[dict[str, Any]]:
    """Run (or reuse) every (method, seed); write ``results.{csv,json,md}`` and ``results.png``.
    ``lr_search``: every method chooses its learning rate from :data:`LR_GRID` on validation
    (unless the configuration sets ``optim.lr_grid`` itself); ``knob_search``: then the value of
    its main knob from the method's ``knob_grid`` (unless the configuration sets
    ``optim.knob_grid``; :mod:`sabma.pipeline.search`). Every run's selective prediction goes
    to ``selective.md`` and, with ``ood``, its OOD detection to ``ood.md``."""
    grid = [f"optim.lr_grid={LR_GRID}"] if lr_search else []
    base = load_config(config, [*(QUICK if quick else []), *grid, *overrides]).to_dict()
    rows, runs = [], []
    user_grid = bool(base["optim"].get("knob_grid"))  # a grid of the user's wins
    for method in methods:
        for seed in seeds:
            cfg = config_from_dict(base, [f"method.name={method}", f"seed={seed}"])
            if knob_search and not user_grid:
                cfg = config_from_dict(cfg.to_dict(), knob_override(cfg))
            log.info("benchmark: %s seed %d", method, seed)
            metrics = run_or_reuse(cfg, out / method / f"seed{seed}", progress, ood=ood)
            runs.append((method, seed, metrics))
            bma = with_scaled(metrics["test"], "bma")
            rows.append(
                {
                    "method": method,
                    "seed": seed,
                    **{m: bma[m] for m in METRICS},
                    **{m: bma.get(m, float("nan")) for m in TS_METRICS},
                    "lr": metrics.get("lr", cfg.optim.lr),
                    "knob": metrics.get("knob", {}).get("value"),
                    "train_s": metrics["timing"]["train_s"],
                }
            )
    write_results(out, rows)
    write_uncertainty_tables(out, runs)
    return rows


def knob_override(cfg: Config) -> list[str]:
    """``optim.knob_grid`` set to the method's grid; nothing for a method without a knob, or
    whose knob does nothing under ``cfg`` (logged)."""
    grid = METHODS[cfg.method.name].knob_grid
    unused = knob_unused(cfg)
    if grid and unused:
        log.info("benchmark: no knob search for %s: %s", cfg.method.name, unused)
        return []
    return [f"optim.knob_grid=[{','.join(repr(float(v)) for v in grid)}]"] if grid else []


def paired_table(by_method: dict[str, list[dict[str, Any]]], reference: str) -> str:
    """Differences to ``reference`` on the same seed (same split), mean ± std over seeds: the
    split-to-split spread that dominates the plain table cancels. Empty without the reference."""
    if reference not in by_method:
        return ""
    ref = {row["seed"]: row for row in by_method[reference]}
    paired: dict[str, list[dict[str, float]]] = {}
    for method, rows in by_method.items():
        deltas = [
            {m: row[m] - ref[row["seed"]][m] for m in (*METRICS, *TS_METRICS)}
            for row in rows
            if row["seed"] in ref
        ]
        if deltas and method != reference:
            paired[method] = deltas
    if not paired:
        return ""
    return (
        f"\n\nPaired differences to `{reference}` (method − {reference} on the same seed), "
        "mean ± std over seeds:\n\n" + mean_std_table(paired, (*METRICS, *TS_METRICS), signed=True)
    )


def write_results(out: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "results.csv", buffer.getvalue())
    atomic_write_json(out / "results.json", rows)
    by_method: dict[str, list[dict[str, float]]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)
    seeds = sorted({row["seed"] for row in rows})
    text = (
        f"# Benchmark: test metrics of each method's predictive, mean ± std over seeds "
        f"{seeds}\n\n"
        + mean_std_table(by_method, (*METRICS, *TS_METRICS, "train_s"))
        + paired_table(by_method, REFERENCE)
        + "\n\n![NLL and ECE per method](results.png)\n"
    )
    atomic_write_text(out / "results.md", text)
    _plot(out / "results.png", by_method)
    write_benchmark_report(out)


def _plot(path: Path, by_method: dict[str, list[dict[str, float]]]) -> None:
    plt = pyplot()
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6), dpi=120)
    names = list(by_method)
    for ax, metric in zip(axes, ("acc", "nll", "ece"), strict=True):
        values = [np.array([r[metric] for r in by_method[m]]) for m in names]
        ax.bar(
            range(len(names)),
            [v.mean() for v in values],
            yerr=[v.std(ddof=1) if len(v) > 1 else 0.0 for v in values],
            capsize=3,
            color=["tab:red" if n == "sabma" else "tab:blue" for n in names],
        )
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_title(metric.upper())
    save_figure(fig, path)


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
