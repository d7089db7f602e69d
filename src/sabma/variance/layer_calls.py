"""Per-example gradients from the calls a layer makes, for layers a forward hook cannot follow.

A convolution layer's ``forward`` may pad its input first (TensorFlow's "same" padding in
EfficientNet-Lite0, ``padding_mode="reflect"``) and then call ``F.conv2d``; a BatchNorm subclass
may add an activation after ``F.batch_norm`` (timm's ``BatchNormAct2d``). A forward hook sees
the layer's input and output, not the call's, so the calls themselves are recorded instead:
:class:`LayerCalls`, a ``TorchFunctionMode``, keeps the input, output and settings of every
``conv2d`` and ``batch_norm`` whose weight is the one a subset layer holds at that moment (a
forward pre-hook notes it). From the call's input x and the gradient g of its output, example
i's gradients follow:

* convolution: the weight's, per group, Σ_positions g_i ⊗ unfold(x_i)
  (:meth:`ConvInput.weight_gradients`); the bias's, g_i summed over the positions;
* batch norm on running statistics: x̂ with the statistics the call used (:class:`Normalised`),
  then the formulas of :mod:`sabma.variance.row_blocks`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.functional import unfold
from torch.overrides import TorchFunctionMode

_ARGUMENTS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_DEFAULTS = (None, None, None, 1, 0, 1, 1)
#: The recorded calls and their arguments, in order: F.batch_norm is a Python function with an
#: order of its own (the mode sees it, and not the torch.batch_norm it calls).
_CALLS: dict[Any, tuple[str, ...]] = {
    torch.conv2d: _ARGUMENTS,
    F.batch_norm: ("input", "mean", "var", "weight", "bias", "training", "momentum", "eps"),
    torch.batch_norm: ("input", "weight", "bias", "mean", "var", "training", "momentum", "eps"),
}


@dataclass
class ConvInput:
    """A convolution call's input (n, C_in, H, W) and settings, as its gradients need them."""

    x: Tensor
    stride: Any
    padding: Any
    dilation: Any
    groups: int

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: Tensor) -> ConvInput:
        return replace(self, x=self.x[index])

    def weight_gradients(self, g: Tensor, shape: torch.Size) -> Tensor:
        """Per-example gradients (n, *shape) of the weight from the output's gradient g."""
        n, groups = len(g), self.groups
        columns = unfold(self.x, shape[2:], self.dilation, self.padding, self.stride)
        columns = columns.view(n, groups, -1, columns.shape[-1])  # (n, G, C_in/G·kh·kw, L)
        g = g.reshape(n, groups, -1, columns.shape[-1])  # (n, G, C_out/G, L)
        return torch.einsum("ngol,ngil->ngoi", g, columns).reshape(n, *shape)


def batch_normalised(x: Tensor, mean: Tensor, var: Tensor, eps: float) -> Tensor:
    """x̂ = (x − mean) / √(var + eps), the statistics per channel (dim 1)."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + eps)


@dataclass
class Normalised:
    """A batch-norm call's input, normalised with the running statistics the call used."""

    x: Tensor

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: Tensor) -> Normalised:
        return Normalised(self.x[index])


@dataclass
class Recorded:
    """One call of a layer in the hooked pass: its input as the formulas take it (a tensor, or a
    :class:`ConvInput`), the tensor that was its input, and its output."""

    input: Any
    source: Tensor
    out: Tensor
    version: int = -1

    def __post_init__(self) -> None:
        self.version = self.source._version

    def usable(self, examples: int) -> bool:
        """Whether the per-example formulas hold for this call: the input was not changed in
        place after the call (the formulas read it later), the batch dimension is the examples'
        (not folded with positions), and the output carries a gradient (not run under no_grad)."""
        return (
            self.source._version == self.version
            and len(self.source) == len(self.out) == examples
            and self.out.requires_grad
        )


_BATCH_NORM = nn.modules.batchnorm._BatchNorm


def supported(module: nn.Module) -> bool:
    """A 2-d convolution whose padding is given in numbers (``"same"`` is not), or a BatchNorm
    on its running statistics whose class has a forward of its own (the stock one is hooked)."""
    if isinstance(module, nn.Conv2d):
        return not isinstance(module.padding, str)
    return (
        isinstance(module, _BATCH_NORM)
        and type(module).forward is not _BATCH_NORM.forward
        and module.track_running_stats
        and not module.training
    )


#: Calls that read a tensor's metadata only: a watched weight may pass through them.
_METADATA = frozenset({"__get__", "size", "dim", "numel", "stride", "is_contiguous"})


class LayerCalls(TorchFunctionMode):
    """Records the ``conv2d`` and ``batch_norm`` calls made with a watched weight: name →
    [Recorded]. A watched
    weight that enters any other computation (``weight.sum()``, a standardisation) makes its
    layer ``tainted``: its gradient is not the call's alone."""

    def __init__(self) -> None:
        super().__init__()
        self.watched: dict[int, tuple[str, Tensor]] = {}  # the tensor kept: its id stays its own
        self.calls: dict[str, list[Recorded]] = {}
        self.tainted: set[str] = set()

    def _name(self, value: Any) -> str | None:
        entry = self.watched.get(id(value))
        return entry[0] if entry is not None and entry[1] is value else None

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not self.watched:
            return out
        if func in _CALLS:
            call = self._call(func, args, kwargs)
            if call is not None:
                name, prepared, x = call
                self.calls.setdefault(name, []).append(Recorded(prepared, x, out))
                return out.clone()  # the network goes on with a copy: in-place ops leave out
        elif getattr(func, "__name__", "") not in _METADATA:
            for value in (*args, *kwargs.values()):
                user = self._name(value)
                if user is not None:
                    self.tainted.add(user)
        return out

    def _call(
        self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[str, Any, Tensor] | None:
        """(layer name, its input as the formulas take it, the input tensor) of a ``conv2d`` or
        ``batch_norm`` call with a watched weight; None for any other call."""
        bound: dict[str, Any] = dict(zip(_ARGUMENTS, _DEFAULTS, strict=True))
        bound.update(zip(_CALLS[func], args, strict=False))
        bound.update(kwargs)
        name, x = self._name(bound["weight"]), bound["input"]
        if name is None:
            return None
        if func is torch.conv2d:
            if isinstance(bound["padding"], str):
                return None
            return name, ConvInput(x.detach(), *(bound[k] for k in _ARGUMENTS[3:])), x
        if bound["training"] or bound["mean"] is None:  # batch statistics: examples interact
            return None
        xhat = batch_normalised(x.detach(), bound["mean"], bound["var"], bound["eps"])
        return name, Normalised(xhat), x

    @contextmanager
    def watching(self, layers: Mapping[str, nn.Module]) -> Iterator[LayerCalls]:
        """Record, while inside, the calls of these layers (:func:`supported` ones)."""

        def note(name: str) -> Any:
            def pre_hook(module: nn.Module, _args: Any) -> None:
                weight = module.weight
                assert isinstance(weight, Tensor)
                self.watched[id(weight)] = (name, weight)

            return pre_hook

        handles = [m.register_forward_pre_hook(note(name)) for name, m in layers.items()]
        try:
            with self:
                yield self
        finally:
            for handle in handles:
                handle.remove()
