"""Sorted indices of the few large entries of a long vector, without a full ``nonzero``.

``(x > c).nonzero()`` over 2·10⁶ entries costs ~2 ms on the CPU (a comparison pass, then a
serial scan), about a tenth of an SGD step of the networks it serves. Where few entries exceed
``c`` (the exact-KL rows of :func:`sabma.step.fisher.shift_kl`: one or two thousand of 1.9·10⁶
on the MLP), a maximum per block of :data:`BLOCK` entries, one parallel pass, finds the blocks
that hold them, and only those blocks are scanned: 0.5 ms. On an accelerator ``nonzero`` is
used as it is.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Entries per block: the maxima then take 1/BLOCK of the vector, and a block that holds a large
#: entry costs BLOCK comparisons.
BLOCK = 128


def indices_above(values: Tensor, threshold: float) -> Tensor:
    """The ascending indices i of a 1-D tensor with ``values[i] > threshold``: the same as
    ``(values > threshold).nonzero().squeeze(1)``, NaN entries excluded."""
    if values.dim() != 1:
        raise ValueError(f"indices_above takes a 1-D tensor, got shape {tuple(values.shape)}")
    if values.device.type != "cpu":  # an accelerator's nonzero is parallel: one sync, not two
        return (values > threshold).nonzero().squeeze(1)
    whole = values.numel() // BLOCK * BLOCK
    blocks = values[:whole].view(-1, BLOCK)
    # a block whose maximum is NaN may still hold a large entry: it is scanned too
    chosen = (~(blocks.amax(dim=1) <= threshold)).nonzero().squeeze(1)
    block, offset = (blocks.index_select(0, chosen) > threshold).nonzero().unbind(1)
    tail = (values[whole:] > threshold).nonzero().squeeze(1)
    return torch.cat([chosen[block] * BLOCK + offset, tail + whole])


def union(a: Tensor, b: Tensor) -> Tensor:
    """The ascending indices in ``a`` or ``b`` (each ascending, without repeats)."""
    return torch.cat([a, b]).unique(sorted=True)
