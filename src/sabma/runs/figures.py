"""Matplotlib without a display, and figures written atomically as PNG."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from sabma.runs.files import atomic_write_bytes


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> None:
    """Lay out, render to PNG in memory, write ``path`` atomically and close the figure."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    pyplot().close(fig)
    atomic_write_bytes(path, buffer.getvalue())
