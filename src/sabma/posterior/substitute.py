"""Running a network with some of its parameters replaced by given tensors, cheaply.

``torch.func.functional_call`` does this in general (parametrizations, strict checks), at a
cost of a few microseconds per tensor per call in Python: about 5 ms per pass for the 100
tensors of EfficientNet-Lite0's norm+head subset, 7 % of its forward pass on 2 CPU cores. The
posterior runs two passes per step, so it uses this lean version: the module slots are resolved
once, and a call swaps the entries of the modules' parameter/buffer dicts and swaps them back.
Tied parameters (one tensor under several names) are replaced under every name. Networks with
``torch.nn.utils.parametrize`` parametrizations go through ``functional_call``. :func:`logits_of`
reads the logits from what the network returns.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.utils import parametrize


class ParameterSlots:
    """Where each named parameter or buffer of ``model`` lives (all aliases of tied tensors)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.general = any(parametrize.is_parametrized(m) for m in model.modules())
        owner: dict[int, str] = {}
        self.slots: dict[str, list[tuple[dict[str, Any], str]]] = {}
        for kind, items in (
            ("_parameters", model.named_parameters(remove_duplicate=False)),
            ("_buffers", model.named_buffers(remove_duplicate=False)),
        ):
            for name, tensor in items:
                module_name, _, attr = name.rpartition(".")
                module = model.get_submodule(module_name) if module_name else model
                first = owner.setdefault(id(tensor), name)
                self.slots.setdefault(first, []).append((getattr(module, kind), attr))

    @contextmanager
    def substituted(self, tensors: dict[str, Tensor]) -> Iterator[None]:
        saved: list[tuple[dict[str, Any], str, Any]] = []
        try:
            for name, value in tensors.items():
                for store, attr in self.slots[name]:
                    saved.append((store, attr, store[attr]))
                    store[attr] = value
            yield
        finally:
            for store, attr, old in reversed(saved):
                store[attr] = old

    def call(
        self,
        tensors: dict[str, Tensor],
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        """``model(*args, **kwargs)`` with ``tensors`` (name → tensor) in place of its own."""
        if self.general:
            return functional_call(self.model, tensors, args, kwargs or {})
        with self.substituted(tensors):
            return self.model(*args, **(kwargs or {}))


def channels_last_names(
    model: nn.Module, names: list[str], shapes: list[tuple[int, ...]]
) -> list[str]:
    """Those of ``names`` (with their ``shapes``) that are 4-d tensors the network keeps
    channels-last (convolution weights after ``model.to(memory_format=torch.channels_last)``):
    a flat weight vector's views of them are NCHW, and handed to a channels-last network as such,
    every convolution converts (EfficientNet-Lite0, subset ``all``, 32 px: forward + backward
    0.76 s against 0.57 s with the weights channels-last, one thread)."""
    convs = [n for n, shape in zip(names, shapes, strict=True) if len(shape) == 4]
    if not convs:
        return []
    params = dict(model.named_parameters())
    return [
        n
        for n in convs
        if params[n].is_contiguous(memory_format=torch.channels_last)
        and not params[n].is_contiguous()
    ]


def logits_of(out: Any) -> Any:
    """The logits in a model's output: the tensor itself, a Hugging Face ``ModelOutput``'s
    ``logits``, or the first item of a tuple of tensors."""
    if isinstance(out, Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(out, tuple | list) and out and isinstance(out[0], Tensor):
        return out[0]
    return out
