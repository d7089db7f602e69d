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
    """The examples ``index`` (a tensor of indices or a slice).

    Token inputs lose the padding columns that none of the chosen examples uses (right padding,
    told by ``attention_mask``), so a batch of short texts runs short."""
    if isinstance(x, Mapping):
        return trim_padding({k: v[index] for k, v in x.items()})
    return x[index]


def trim_padding(x: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``x`` without trailing sequence positions that every ``attention_mask`` row masks."""
    mask = x.get("attention_mask")
    if mask is None or mask.dim() != 2 or mask.shape[0] == 0:
        return dict(x)
    used = mask.any(dim=0).nonzero()
    width = int(used[-1]) + 1 if len(used) else 1
    if width == mask.shape[1]:
        return dict(x)
    length = mask.shape[1]
    return {k: v[:, :width] if v.dim() >= 2 and v.shape[1] == length else v for k, v in x.items()}


def length_order(x: Inputs) -> Tensor | None:
    """An order of the examples by token count (None for tensors, or without a mask): batches
    taken in this order carry little padding."""
    if not isinstance(x, Mapping) or "attention_mask" not in x:
        return None
    return torch.argsort(x["attention_mask"].sum(dim=1), stable=True)


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
