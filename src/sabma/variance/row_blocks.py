"""Blocks of rows of G, the per-example Fisher gradients, as a refresh streams them.

A block gives its rows (all of them, or some) and the column sums of their squares, the Fisher
diagonal's share (:func:`sabma.variance.fisher_gradients.fisher_sketch` needs the sums of every
row but keeps only a few rows where the subset is large).

* :class:`DenseRows` holds the rows themselves (from ``vmap`` or one pass per example).
* :class:`LayerRows` holds what a hooked pass leaves (:mod:`sabma.variance.layer_gradients`):
  each layer's input and, per label draw, the gradient with respect to its output. It forms rows
  on demand, and sums the squares without forming them where the layer allows: for a Linear
  layer on one position, Σ_i (g_i x_iᵀ)² = (g²)ᵀ x² elementwise, one product of (o, n) and
  (n, i); other layers form their per-example block one layer at a time. At the MLP of
  docs/speed.md (d = 1.9·10⁶) a block of 9 rows is 67 MB, and a refresh keeps 36 of its 256
  rows. It forms the first 36 and then only the rows that take a slot as their block streams
  past (about 70, of which a later one may replace some): about 150 rows are never formed.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.nn.functional import layer_norm

from sabma.posterior.gaussian import GaussianPosterior
from sabma.variance.layer_calls import ConvInput, Normalised, batch_normalised


class RowBlock(Protocol):
    """Rows of G, in order (draw-major where an example has several label draws)."""

    def __len__(self) -> int: ...

    def rows(self, index: Tensor | None = None) -> Tensor:
        """The rows (len, d), or those at ``index``, in its order."""
        ...

    def square_sum(self) -> Tensor:
        """Σ over the rows of g ⊙ g, shape (d,)."""
        ...


class DenseRows:
    """A block whose rows are formed."""

    def __init__(self, rows: Tensor) -> None:
        self._rows = rows

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self, index: Tensor | None = None) -> Tensor:
        return self._rows if index is None else self._rows[index]

    def square_sum(self) -> Tensor:
        """Σ g ⊙ g, squaring the rows in place: the block's own rows (``rows()``) are spent."""
        return self._rows.square_().sum(0)


def layer_input(module: nn.Module, x: Any) -> Any:
    """What the per-example gradient formulas take of a layer's input: x for a Linear layer, x̂
    (before the affine map) for a normalization layer, the call's input and settings
    (:class:`~sabma.variance.layer_calls.ConvInput`) for a convolution."""
    if isinstance(module, nn.Linear | nn.Conv2d):
        return x
    if isinstance(x, Normalised):  # a recorded batch-norm call: normalised with its statistics
        return x.x
    if isinstance(module, nn.LayerNorm):
        return layer_norm(x, module.normalized_shape, eps=module.eps)
    assert isinstance(module, nn.modules.batchnorm._BatchNorm)
    assert module.running_mean is not None and module.running_var is not None
    return batch_normalised(x, module.running_mean, module.running_var, module.eps)


def _outer(module: nn.Module, attr: str, g: Tensor) -> bool:
    """Whether the per-example gradient is an outer product g_i x_iᵀ (a Linear weight on one
    position)."""
    return isinstance(module, nn.Linear) and attr == "weight" and g.numel() == len(g) * g.shape[-1]


def per_example(module: nn.Module, attr: str, x: Any, g: Tensor) -> Tensor:
    """The per-example gradients (n, *shape) of the layer's ``attr`` from its prepared input x
    (:func:`layer_input`) and output gradient g (Goodfellow 2015): a new tensor, which the
    caller may overwrite."""
    n = g.shape[0]
    if isinstance(x, ConvInput):
        if attr == "bias":
            return g.sum((2, 3))
        weight = module.weight
        assert isinstance(weight, Tensor)
        return x.weight_gradients(g, weight.shape)
    if isinstance(module, nn.Linear):
        gf = g.reshape(n, -1, g.shape[-1])
        if attr == "bias":
            return gf.sum(1)
        return torch.einsum("npo,npi->noi", gf, x.reshape(n, -1, x.shape[-1]))
    if isinstance(module, nn.LayerNorm):  # the parameters span the last dims; sum the rest
        dims = tuple(range(1, g.dim() - len(module.normalized_shape)))
    else:  # BatchNorm: the channel is dim 1; sum the positions
        dims = tuple(range(2, g.dim()))
    if attr == "weight":
        return (g * x).sum(dims) if dims else g * x
    return g.sum(dims) if dims else g.clone()  # a new tensor, never g itself


class LayerRows:
    """A block of a hooked pass: rows formed on demand (see the module docstring).

    Args:
        posterior: whose flat order the rows follow.
        layers: the subset's layers by name.
        inputs: each layer's prepared input (:func:`layer_input`) for the block's n examples.
        draws: per label draw, each layer's output gradient for those examples.
    """

    def __init__(
        self,
        posterior: GaussianPosterior,
        layers: dict[str, nn.Module],
        inputs: dict[str, Any],
        draws: list[dict[str, Tensor]],
    ) -> None:
        self.posterior, self.layers, self.inputs, self.draws = posterior, layers, inputs, draws
        self.examples = len(next(iter(inputs.values())))
        self._like = next(iter(draws[0].values()))

    def __len__(self) -> int:
        return len(self.draws) * self.examples

    def _slots(self, flat: Tensor) -> dict[str, dict[str, Tensor]]:
        """Views of ``flat`` (…, d) as each subset tensor: layer name → attribute → view."""
        lead = flat.shape[:-1]
        slots: dict[str, dict[str, Tensor]] = {name: {} for name in self.layers}
        posterior = self.posterior
        for full, piece, shape in zip(
            posterior.names, flat.split(posterior.numels, dim=-1), posterior.shapes, strict=True
        ):
            module_name, _, attr = full.rpartition(".")
            slots[module_name][attr] = piece.view(*lead, *shape)
        return slots

    def _write(self, grads: dict[str, Tensor], examples: Tensor | None, out: Tensor) -> None:
        """The rows of one draw (of ``examples``, or all) into ``out``, layer by layer."""
        for name, views in self._slots(out).items():
            module, x, g = self.layers[name], self.inputs[name], grads[name]
            if examples is not None:
                x, g = x[examples], g[examples]
            for attr, view in views.items():
                if _outer(module, attr, g):  # written in place, with no (n, o, i) temporary
                    torch.mul(g.reshape(len(g), -1, 1), x.reshape(len(x), 1, -1), out=view)
                else:
                    view.copy_(per_example(module, attr, x, g))

    def rows(self, index: Tensor | None = None) -> Tensor:
        n = self.examples
        out = self._like.new_empty(len(self) if index is None else len(index), self.posterior.dim)
        for s, grads in enumerate(self.draws):
            if index is None:
                self._write(grads, None, out[s * n : (s + 1) * n])
                continue
            where = (index // n == s).nonzero().flatten()
            if len(where):
                part = out.new_empty(len(where), out.shape[1])
                self._write(grads, index[where] % n, part)
                out[where] = part
        return out

    def square_sum(self) -> Tensor:
        total = self._like.new_zeros(self.posterior.dim)
        for grads in self.draws:
            for name, views in self._slots(total).items():
                module, x, g = self.layers[name], self.inputs[name], grads[name]
                for attr, view in views.items():
                    if _outer(module, attr, g):  # Σ_i (g_i x_iᵀ)² = (g²)ᵀ x²
                        view.addmm_(
                            g.reshape(len(g), -1).square().T, x.reshape(len(x), -1).square()
                        )
                    else:
                        view.add_(per_example(module, attr, x, g).square_().sum(0))
        return total
