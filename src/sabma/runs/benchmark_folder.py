"""A benchmark folder: one run folder per (method, seed) under ``<method>/seed<k>``, the
summaries of each command (``results.md``, ``shift.md``, ``sharpness.md``) and their report."""

from __future__ import annotations

from pathlib import Path

from sabma.runs.files import atomic_write_text
from sabma.runs.folder import CONFIG, METRICS


def write_benchmark_report(folder: Path) -> None:
    """``report.md`` of a benchmark: its results, selective-prediction, OOD, shift and sharpness
    tables with their plots (each part present once its command has run)."""
    parts: list[str] = []
    for name in ("results.md", "selective.md", "ood.md", "shift.md", "sharpness.md"):
        if (folder / name).is_file():
            lines = (folder / name).read_text().strip().splitlines()
            if parts:  # later parts become sections of the first
                lines = ["#" + line if line.startswith("#") else line for line in lines]
            parts.append("\n".join(lines))
    atomic_write_text(folder / "report.md", "\n\n".join(parts) + "\n")


def benchmark_runs(folder: Path, seeds: list[int] | None = None) -> list[Path]:
    """The finished runs ``folder/<method>/seed<k>`` of a benchmark folder, optionally only those
    of ``seeds`` (empty for a run directory itself)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a run directory (it does not exist)")
    if (folder / CONFIG).is_file():
        return []
    runs = sorted(p.parent for p in folder.glob(f"*/seed*/{METRICS}"))
    if not runs:
        raise FileNotFoundError(
            f"{folder} is neither a run directory (no config.yaml) nor a benchmark folder "
            "(no <method>/seed<k>/metrics.json)"
        )
    if seeds is not None:
        runs = [r for r in runs if r.name in {f"seed{s}" for s in seeds}]
        if not runs:
            raise ValueError(f"{folder} holds no finished run of seeds {seeds}")
    return runs
