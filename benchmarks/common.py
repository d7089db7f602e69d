"""Machine description and result writing shared by the benchmarks."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch

from sabma import select_parameters


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        json.dump(payload, tmp, indent=2)
        tmp.flush()
        os.fsync(tmp.fileno())
    os.replace(tmp.name, path)


def train_only_subset(
    model: torch.nn.Module, subset: str = "norm+head"
) -> list[torch.nn.Parameter]:
    """Freeze ``model`` except ``subset``; its parameters (for SGD and SAM on the same subset the
    posterior covers: the same backward work)."""
    params = dict(model.named_parameters())
    model.requires_grad_(False)
    chosen = [params[n] for n in select_parameters(model, subset)]
    for p in chosen:
        p.requires_grad_(True)
    return chosen
