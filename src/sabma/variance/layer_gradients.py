"""Per-example gradients of the usual Bayesian subset in one batched pass, from layer hooks.

In eval mode the examples of a batch do not interact, so one backward pass of the summed loss
gives each example's gradient with respect to each layer's *output*, ``g_i = ∂ℓ_i/∂out_i``. For
the layers a transfer subset is made of, the parameter gradient is a cheap function of ``g_i``
and the layer's input ``x_i`` (Goodfellow 2015, "Efficient per-example gradient computations"):

* BatchNorm on its running statistics, ``out = γ x̂ + β``: ∂ℓ_i/∂γ = Σ g_i ⊙ x̂_i and
  ∂ℓ_i/∂β = Σ g_i over every position of the example (x̂ from the running mean and variance);
* LayerNorm (x̂ normalised per position): the same sums;
* Linear, ``out = x Wᵀ + b``: ∂ℓ_i/∂W = Σ g_iᵀ x_i and ∂ℓ_i/∂b = Σ g_i over positions;
* 2-d convolutions, from the ``conv2d`` call itself (its padded input; per group, g_i against
  the unfolded input, summed over positions), and BatchNorm subclasses with a forward of their
  own, from their ``batch_norm`` call (:mod:`sabma.variance.layer_calls`).

One forward and one backward over a batch cost about what a training step costs, against a
``vmap`` of per-example passes (EfficientNet-Lite0 at 64 px, 100 images, 2-core CPU: measured in
docs/results.md; EfficientNet-Lite0 with every parameter Bayesian: docs/speed.md). Where a
subset tensor belongs to any other kind of layer, to a BatchNorm that uses batch statistics, to
a layer run twice in one pass, or to a convolution that calls ``conv2d`` with something other
than its weight or with ``padding="same"``, :func:`layer_gradients` returns None and the caller
falls back to ``vmap``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.functional import cross_entropy

from sabma.models import inputs
from sabma.models.inputs import Inputs
from sabma.posterior.gaussian import GaussianPosterior
from sabma.variance import layer_calls
from sabma.variance.layer_calls import LayerCalls, Recorded
from sabma.variance.row_blocks import DenseRows, LayerRows, RowBlock, layer_input

#: The layers whose formulas hold, with the forward they hold for: a subclass with a forward of
#: its own is not hooked: a BatchNorm one (timm's BatchNormAct2d adds an activation) is followed
#: through its batch_norm call (:mod:`sabma.variance.layer_calls`), the others go to vmap.
_STOCK_FORWARD = {
    nn.modules.batchnorm._BatchNorm: nn.modules.batchnorm._BatchNorm.forward,
    nn.LayerNorm: nn.LayerNorm.forward,
    nn.Linear: nn.Linear.forward,
}


def _supported(module: nn.Module, attr: str) -> bool:
    if attr not in ("weight", "bias"):
        return False
    if layer_calls.supported(module):  # followed through its own call, whatever its forward
        return True
    stock = next((f for kind, f in _STOCK_FORWARD.items() if isinstance(module, kind)), None)
    if stock is None or type(module).forward is not stock:
        return False
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return module.track_running_stats and not module.training
    return True


def _layers(posterior: GaussianPosterior) -> dict[str, nn.Module] | None:
    """The subset's layers by name, or None when one of them is not supported or a subset
    tensor is tied (one tensor under several names: its gradient sums over the layers)."""
    layers: dict[str, nn.Module] = {}
    slots = posterior.slots.slots
    for name in posterior.names:
        module_name, _, attr = name.rpartition(".")
        module = posterior.model.get_submodule(module_name)
        if not _supported(module, attr) or len(slots.get(name, ())) != 1:
            return None
        layers[module_name] = module
    return layers


def layer_gradients(posterior: GaussianPosterior, w: Tensor, x: Inputs, y: Tensor) -> Tensor | None:
    """G (n, d): the per-example gradients of −log p(y_i | x_i, w) over the subset, in the
    posterior's flat order (rows of the examples whose outputs are finite); None where the layers
    do not allow it (see the module docstring). The network must be in eval mode."""
    result = sampled_layer_gradients(posterior, w, x, lambda probs, keep: y[keep].reshape(-1, 1))
    return None if result is None else result[0].rows()


def sampled_layer_gradients(
    posterior: GaussianPosterior,
    w: Tensor,
    x: Inputs,
    draw: Callable[[Tensor, Tensor], Tensor],
) -> tuple[RowBlock, Tensor] | None:
    """Per-example gradients of −log p(ŷ | x, w) with the labels drawn from the same pass.

    One forward pass gives the probabilities; ``draw(probs, keep)`` maps those of the examples
    whose outputs are finite (their indices ``keep``), (n', C), to labels (n', S); one backward
    pass per column gives G_s (n', d). Returns (G (S·n', d), draw-major as [G_1; …; G_S], as a
    block that forms its rows on demand (:class:`~sabma.variance.row_blocks.LayerRows`); the
    indices of the n' kept examples), or None — before ``draw`` is called — where the layers do
    not allow it."""
    layers = _layers(posterior)
    if layers is None:
        return None
    called = {name: m for name, m in layers.items() if layer_calls.supported(m)}
    seen: dict[str, list[Recorded]] = {name: [] for name in layers if name not in called}

    def hook(name: str) -> Any:
        def capture(_m: nn.Module, args: tuple[Any, ...], out: Tensor) -> Tensor:
            seen[name].append(Recorded(args[0].detach(), args[0], out))
            return out.clone()  # the network goes on with a copy: in-place ops leave out as is

        return capture

    handles = [m.register_forward_hook(hook(name)) for name, m in layers.items() if name in seen]
    recorder = LayerCalls()
    try:
        with torch.enable_grad(), recorder.watching(called) if called else nullcontext():
            weights = w.detach().requires_grad_(True)  # so the activations carry gradients
            out = inputs.call(posterior.forward_with, x, weights)
    finally:
        for handle in handles:
            handle.remove()
    seen = {name: seen[name] if name in seen else recorder.calls.get(name, []) for name in layers}
    if recorder.tainted or not all(
        len(calls) == 1 and calls[0].usable(inputs.count(x)) for calls in seen.values()
    ):
        return None  # see Recorded.usable and LayerCalls
    probs = torch.softmax(out.detach(), dim=-1)
    keep = torch.isfinite(probs).all(dim=1).nonzero().flatten()
    if not len(keep):
        return DenseRows(out.new_zeros(0, posterior.dim)), keep
    labels = draw(probs[keep], keep)
    outputs = [calls[0].out for calls in seen.values()]
    draws = []
    for s in range(labels.shape[1]):
        with torch.enable_grad():  # the optimiser refreshes inside its no-grad update
            loss = cross_entropy(out[keep], labels[:, s], reduction="sum")
            last = s == labels.shape[1] - 1
            grads = torch.autograd.grad(loss, outputs, retain_graph=not last, allow_unused=True)
        draws.append(
            {
                name: (torch.zeros_like(output) if g is None else g.detach())[keep]
                for name, output, g in zip(layers, outputs, grads, strict=True)
            }
        )
    layer_inputs = {name: layer_input(m, seen[name][0].input[keep]) for name, m in layers.items()}
    return LayerRows(posterior, layers, layer_inputs, draws), keep
