"""Per-example gradients with labels sampled from the model: a square root of the Fisher.

For a softmax likelihood the Fisher information of p(y | x, w) equals the generalised Gauss-Newton
matrix of the cross-entropy: F = E_x E_{ŷ ~ p(·|x,w)}[g gᵀ], g = ∇_w −log p(ŷ | x, w). Stacking
the per-example gradients g_i (one or more label draws per example) as rows of G (M, d) gives
F ≈ GᵀG / M, so diag F ≈ mean_i g_i² and G itself is the square root the low-rank factor needs
(:mod:`sabma.variance.factor`). Labels come from the model, never from the data: the true labels
would give the *empirical* Fisher, which is not a curvature (Kunstner et al. 2019).

In few-shot transfer the whole training set is a few batches, so G is computed on all of it
(or on a seeded random subset of at most ``max_examples``) instead of a one-sample estimate per
step. Per-example gradients come, in order of preference, from layer hooks in one batched pass
(:mod:`sabma.variance.layer_gradients`: subsets of BatchNorm, LayerNorm and Linear layers), from
``torch.func.vmap`` over ``torch.func.grad``, or from one backward pass per example (networks
whose operations vmap does not support).
The network runs in eval mode (normalization layers on their running statistics): a per-example
pass has no batch statistics.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn.functional import cross_entropy

from sabma.models import inputs
from sabma.models.inputs import Inputs
from sabma.posterior.gaussian import GaussianPosterior
from sabma.variance.layer_gradients import sampled_layer_gradients
from sabma.variance.row_blocks import DenseRows, RowBlock

log = logging.getLogger(__name__)

#: network classes on which vmap failed once: they go straight to the per-example loop
_LOOPED: set[type] = set()


def _one(x: Inputs) -> Inputs:
    """One example as a batch of one."""
    if isinstance(x, Mapping):
        return {k: v.unsqueeze(0) for k, v in x.items()}
    return x.unsqueeze(0)


def _loss_fn(posterior: GaussianPosterior) -> Any:
    def loss(w: Tensor, x: Inputs, y: Tensor) -> Tensor:
        out = inputs.call(posterior.forward_with, _one(x), w)
        return cross_entropy(out, y.unsqueeze(0))

    return loss


def _per_example_vmap(posterior: GaussianPosterior, w: Tensor, x: Inputs, y: Tensor) -> Tensor:
    from torch.func import grad, vmap

    return vmap(grad(_loss_fn(posterior)), in_dims=(None, 0, 0))(w, x, y)


def _per_example_loop(posterior: GaussianPosterior, w: Tensor, x: Inputs, y: Tensor) -> Tensor:
    loss = _loss_fn(posterior)
    rows = []
    with torch.enable_grad():  # the optimiser refreshes inside its no-grad update
        for i in range(len(y)):
            wi = w.detach().requires_grad_(True)
            xi = {k: v[i] for k, v in x.items()} if isinstance(x, Mapping) else x[i]
            (g,) = torch.autograd.grad(loss(wi, xi, y[i]), [wi])
            rows.append(g)
    return torch.stack(rows)


def _dense_block(posterior: GaussianPosterior, w: Tensor, x: Inputs, y: Tensor) -> DenseRows:
    """The rows of one draw from ``vmap``; where ``vmap`` fails on a network class (remembered),
    from one pass per example."""
    if type(posterior.model) not in _LOOPED:
        try:
            return DenseRows(_per_example_vmap(posterior, w, x, y).detach())
        except (RuntimeError, NotImplementedError) as err:
            _LOOPED.add(type(posterior.model))
            log.warning(
                "per-example gradients: vmap failed (%s); one pass per example",
                str(err).splitlines()[0],
            )
    return DenseRows(_per_example_loop(posterior, w, x, y))


def sampled_fisher_gradients(
    posterior: GaussianPosterior,
    x: Inputs | Iterable[Any],
    weights: Tensor | None = None,
    *,
    label_samples: int = 1,
    max_examples: int | None = None,
    batch_size: int = 32,
    generator: torch.Generator | None = None,
) -> Tensor:
    """G (M, d): per-example gradients of −log p(ŷ | x, w) with ŷ drawn from the model.

    Args:
        posterior: the posterior whose subset the gradients are taken over.
        x: the examples (a tensor, or a mapping of token tensors), or an iterable of batches
            such as a ``DataLoader`` (inputs taken from each batch, labels ignored).
        weights: w (d,), default the posterior mean μ.
        label_samples: draws of ŷ per example (M = examples × draws).
        max_examples: use a seeded random subset of at most this many examples (of a loader:
            its first ones, read only that far).
        batch_size: examples per vectorised pass.
        generator: for the subset and the labels (on the CPU).

    The network is put in eval mode and runs in full precision (no autocast), then goes back to
    its previous mode. Inputs whose outputs are not finite are left out (with a warning); if none
    is left (a diverged network), ``FloatingPointError``.
    """
    blocks = fisher_gradient_blocks(
        posterior,
        x,
        weights,
        label_samples=label_samples,
        max_examples=max_examples,
        batch_size=batch_size,
        generator=generator,
    )
    return torch.cat([block.rows() for block in blocks])


@dataclass
class FisherSketch:
    """What a refresh keeps of G (M, d) when M·d floats do not fit: the diagonal of the sampled
    Fisher, diag GᵀG / M, from every row, and a seeded random subset of the rows (at most a
    budget; all of them, in order, where they fit)."""

    diagonal: Tensor
    rows: Tensor
    count: int


def fisher_sketch(
    posterior: GaussianPosterior,
    x: Inputs | Iterable[Any],
    *,
    max_rows: int,
    label_samples: int = 1,
    max_examples: int | None = None,
    batch_size: int = 32,
    generator: torch.Generator | None = None,
) -> FisherSketch:
    """The diagonal of the sampled Fisher over all of :func:`sampled_fisher_gradients`' rows,
    streamed one batch at a time, and at most ``max_rows`` of the rows themselves (a uniform
    random subset, by reservoir sampling with ``generator``). Where all rows fit, the result is
    exactly that of ``G = sampled_fisher_gradients(…)``: (diag GᵀG/M, G, M); otherwise memory
    is O((max_rows + batch_size·label_samples)·d) instead of O(M·d)."""
    if max_rows < 0:
        raise ValueError(f"max_rows must be >= 0, got {max_rows}")
    blocks = fisher_gradient_blocks(
        posterior,
        x,
        label_samples=label_samples,
        max_examples=max_examples,
        batch_size=batch_size,
        generator=generator,
    )
    kept: list[Tensor] = []  # while every row fits: the blocks' rows themselves
    reservoir: Tensor | None = None
    square_sum: Tensor | None = None
    count = 0
    for block in blocks:
        fill = 0  # the block's first rows that complete the reservoir
        if reservoir is None:
            if count + len(block) <= max_rows:
                kept.append(block.rows())
                count += len(block)
                continue
            # the budget is exceeded: from here on, stream
            fill = max_rows - count
            reservoir = torch.cat([*kept, block.rows(torch.arange(fill))])
            square_sum = reservoir[:count].square().sum(0)
            count, kept = max_rows, []
        assert square_sum is not None
        _replace(reservoir, block, count, generator, first=fill)  # the rows it keeps first:
        square_sum += block.square_sum()  # then a dense block's rows are squared in place
        count += len(block) - fill
    if reservoir is None:
        grads = torch.cat(kept)
        return FisherSketch(grads.square().mean(0), grads, count)
    assert square_sum is not None
    return FisherSketch(square_sum / count, reservoir, count)


def _replace(
    reservoir: Tensor,
    block: RowBlock,
    seen: int,
    generator: torch.Generator | None,
    first: int = 0,
) -> None:
    """Reservoir sampling (Algorithm R): row t of the stream (the block's rows from ``first``
    on, t = seen, seen + 1, …) replaces a uniformly chosen kept row with probability
    max_rows / (t + 1). The choices do not depend on the rows, so they are drawn first and only
    the rows that stay in are formed (the last row to choose a slot holds it)."""
    size = len(reservoir)
    if not size:
        return
    slots: dict[int, int] = {}
    for i in range(first, len(block)):
        j = int(torch.randint(seen + i - first + 1, (1,), generator=generator))
        if j < size:
            slots[j] = i
    if slots:
        reservoir[list(slots)] = block.rows(torch.tensor(list(slots.values())))


def fisher_gradient_blocks(
    posterior: GaussianPosterior,
    x: Inputs | Iterable[Any],
    weights: Tensor | None = None,
    *,
    label_samples: int = 1,
    max_examples: int | None = None,
    batch_size: int = 32,
    generator: torch.Generator | None = None,
) -> Iterator[RowBlock]:
    """:func:`sampled_fisher_gradients` one batch at a time: blocks of rows of G, in order. A
    dense block's rows are its own (:func:`fisher_sketch` squares them in place)."""
    if label_samples < 1:
        raise ValueError(f"label_samples must be at least 1, got {label_samples}")
    w = (posterior.mean if weights is None else weights).detach()
    if isinstance(x, Tensor | Mapping):
        n = inputs.count(x)
        index = torch.arange(n)
        if max_examples is not None and n > max_examples:
            index = torch.randperm(n, generator=generator)[:max_examples].sort().values
        parts: Iterable[Inputs] = (inputs.take(x, part) for part in index.split(batch_size))
    else:  # a loader: its first max_examples inputs (a shuffled loader gives a random subset)
        parts = inputs.input_batches(x, batch_size, max_examples)
    was_training, autocast = posterior.model.training, posterior.autocast_dtype
    posterior.eval()
    posterior.autocast_dtype = None
    skipped, produced, by_layers = 0, 0, True

    def draw(probs: Tensor, keep: Tensor) -> Tensor:
        labels = torch.multinomial(probs.cpu(), label_samples, True, generator=generator)
        return labels.to(posterior.device)

    try:
        for part in parts:
            xb = inputs.to_device(part, posterior.device)
            # labels drawn from the hooked pass itself: one forward
            hooked = sampled_layer_gradients(posterior, w, xb, draw) if by_layers else None
            if hooked is not None:
                block, kept = hooked
                skipped += inputs.count(xb) - len(kept)
                if len(kept):
                    produced += 1
                    yield block
                continue
            by_layers = False
            with torch.no_grad():
                probs = torch.softmax(inputs.call(posterior.forward_with, xb, w), dim=-1)
            keep = torch.isfinite(probs).all(dim=1).nonzero().flatten()
            if len(keep) < len(probs):  # bad inputs (their training steps are skipped too)
                skipped += len(probs) - len(keep)
                xb, probs = inputs.take(xb, keep), probs[keep]
            if not len(keep):
                continue
            draws = draw(probs, torch.arange(len(probs)))
            for s in range(label_samples):
                produced += 1
                yield _dense_block(posterior, w, xb, draws[:, s])
    finally:
        posterior.train(was_training)
        posterior.autocast_dtype = autocast
    if not produced:
        raise FloatingPointError(
            "the network's outputs at the posterior mean are not finite on any training input: "
            "training has diverged (lower optim.lr)"
        )
    if skipped:
        log.warning("per-example gradients: %d inputs with non-finite outputs left out", skipped)
