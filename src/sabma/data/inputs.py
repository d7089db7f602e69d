"""Model inputs that are a tensor (images) or a mapping of tensors (Hugging Face style text).

The training loop and the predictive index, move, split and feed inputs through these helpers, so
the same code serves ``model(x)`` and ``model(**batch)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

import torch
from torch import Tensor

Inputs: TypeAlias = Tensor | Mapping[str, Tensor]


def count(x: Inputs) -> int:
    """The number of examples."""
    if isinstance(x, Mapping):
        return len(next(iter(x.values())))
    return len(x)


def take(x: Inputs, index: Tensor | slice) -> Inputs:
    """The examples ``index`` (a tensor of indices or a slice)."""
    if isinstance(x, Mapping):
        return {k: v[index] for k, v in x.items()}
    return x[index]


def to_device(x: Inputs, device: torch.device) -> Inputs:
    if isinstance(x, Mapping):
        return {k: v.to(device) for k, v in x.items()}
    return x.to(device)


def batches(x: Inputs, size: int) -> list[Inputs]:
    """Consecutive batches of at most ``size`` examples."""
    return [take(x, slice(start, start + size)) for start in range(0, count(x), size)]


def call(fn: Callable[..., Any], x: Inputs, *leading: Any) -> Any:
    """``fn(*leading, x)`` for a tensor, ``fn(*leading, **x)`` for a mapping."""
    if isinstance(x, Mapping):
        return fn(*leading, **x)
    return fn(*leading, x)


def device_of(x: Inputs) -> torch.device:
    if isinstance(x, Mapping):
        return next(iter(x.values())).device
    return x.device
