"""Model inputs that are a tensor (images) or a mapping of tensors (Hugging Face style text).

The training loop and the predictive index, move, split and feed inputs through these helpers, so
the same code serves ``model(x)`` and ``model(**batch)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeAlias

import torch
from torch import Tensor

Inputs: TypeAlias = Tensor | Mapping[str, Tensor]

#: Keys of a dict batch that hold the labels, not the model's inputs (Hugging Face: ``labels``).
LABEL_KEYS = ("labels", "label", "targets", "target", "y")


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


def from_batch(batch: Any) -> Inputs:
    """The model's inputs in one batch of a ``DataLoader``: the batch itself when it is a
    tensor, the first item of a tuple/list ``(inputs, labels, …)``, or a dict's tensors without
    the label keys (:data:`LABEL_KEYS`)."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, list | tuple) and batch and isinstance(batch[0], Tensor | Mapping):
        return from_batch(batch[0]) if isinstance(batch[0], Mapping) else batch[0]
    if isinstance(batch, Mapping):
        found = {k: v for k, v in batch.items() if isinstance(v, Tensor) and k not in LABEL_KEYS}
        if found:
            return found
    raise TypeError(
        f"cannot find the model's inputs in a batch of type {type(batch).__name__}: a loader "
        "should yield inputs, (inputs, labels, …) or a dict of tensors"
    )


def input_batches(
    data: Inputs | Iterable[Any], size: int, max_examples: int | None = None
) -> Iterator[Inputs]:
    """Batches of at most ``size`` inputs, at most ``max_examples`` in all: from in-memory
    inputs (a tensor or a dict of tensors), or streamed from an iterable of batches such as a
    ``DataLoader`` (its inputs taken by :func:`from_batch`; the loader is read only as far as
    needed)."""
    left = max_examples if max_examples is not None else float("inf")
    stream: Iterable[Any] = [data] if isinstance(data, Tensor | Mapping) else data
    for batch in stream:
        x = from_batch(batch)
        for start in range(0, count(x), size):
            if left <= 0:
                return
            part = take(x, slice(start, start + int(min(size, left))))
            left -= count(part)
            yield part
        if left <= 0:
            return
