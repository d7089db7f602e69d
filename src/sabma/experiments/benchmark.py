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
from sabma.runs.benchmark_folder import write_benchmark_report
from sabma.runs.figures import pyplot, save_figure
from sabma.runs.files import atomic_write_json, atomic_write_text
from sabma.runs.tables import mean_std_table, with_scaled

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
                    "edge": ",".join(metrics.get("lr_search", {}).get("edge", [])),
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


def edge_note(rows: list[dict[str, Any]]) -> str:
    """The runs whose search chose a value on the edge of its grid, extended by one step past
    it (:mod:`sabma.pipeline.search`): their best value may lie further out."""
    edges = [f"{r['method']} seed {r['seed']} ({r['edge']})" for r in rows if r.get("edge")]
    if not edges:
        return ""
    return (
        "\n\nOn the edge of the searched grid, after one step past it (the best value may lie "
        "further out): " + ", ".join(edges) + "."
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
        + edge_note(rows)
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
