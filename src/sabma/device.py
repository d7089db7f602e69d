"""Choosing the device and the mixed precision of a run (nothing else names a device)."""

from __future__ import annotations

import torch

AMP_MODES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """``"auto"``: CUDA when available, else CPU; otherwise any device string torch knows."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(
            f"device {name!r} is not a torch device (auto, cpu, cuda, cuda:1, …)"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here")
    return device


def amp_dtype(mode: str) -> torch.dtype | None:
    """The autocast dtype of ``optim.amp`` (None: full precision)."""
    if mode not in AMP_MODES:
        raise ValueError(f"optim.amp must be one of {sorted(AMP_MODES)}, got {mode!r}")
    return AMP_MODES[mode]


def cuda_devices_in_use() -> list[int]:
    """The CUDA devices whose generators ``torch.manual_seed`` reseeds, to fork and restore
    (none where CUDA is not in use)."""
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return []
    return list(range(torch.cuda.device_count()))
