"""Products with the factor D (d × K, stored column-major) on every CPU core.

``Dᵀx`` and ``D u`` are matrix-vector products, which the CPU BLAS runs on one thread: at
d = 1.9·10⁶, K = 5 each took 1.6–3 ms on the 2-core development VM, where reading D takes
0.7 ms. Cut into :data:`FACTOR_BLOCKS` blocks of rows, the same products become batched
products (``bmm``), which torch spreads over its threads: 1.2–1.9 ms. The three products of a
step with the default variance (D z₂, Dᵀg, D(Dᵀg)) save ~2 ms of a ~48 ms step on the MLP of
docs/speed.md. The same holds for the tall (d × M) square root of the Fisher that a refresh's
subspace iteration multiplies by (:func:`tall_t_times`, :func:`tall_times`): a refresh of that
MLP takes 6.4 s instead of 8.5 s.

Only vectors of at least :data:`BLOCKED_MIN` entries on the CPU take the blocked path (below it
a product costs < 0.1 ms); the others, and every tensor on an accelerator, the plain product.
The blocked products are the same sums, possibly rounded otherwise (``Dᵀx`` adds the blocks'
partial sums; ``D u`` came out bit for bit the same at d = 1.9·10⁶, not at every size). The
block count is fixed, so the values do not depend on the number of threads.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Vectors with at least this many entries take the blocked path on the CPU.
BLOCKED_MIN = 1 << 20
#: Row blocks of a blocked product: fixed, so its rounding does not depend on the thread count.
FACTOR_BLOCKS = 8


def _blocks(factor: Tensor) -> int:
    """Rows per block where the blocked path applies (D on the CPU, column-major, d ≥
    BLOCKED_MIN); 0 where the plain product is used."""
    d = factor.shape[0]
    if factor.device.type != "cpu" or d < BLOCKED_MIN or not factor.T.is_contiguous():
        return 0
    return d // FACTOR_BLOCKS


def factor_t_times(factor: Tensor, x: Tensor) -> Tensor:
    """Dᵀ x for x of shape (d,): shape (K,)."""
    return tall_t_times(factor, x.unsqueeze(1)).squeeze(1)


def _row_blocks(factor: Tensor, rows: int) -> Tensor:
    """Dᵀ's first B·c columns as (B, K, c): block b holds rows b·c … (b + 1)·c − 1 of D."""
    k = factor.shape[1]
    return factor.T[:, : rows * FACTOR_BLOCKS].reshape(k, FACTOR_BLOCKS, rows).transpose(0, 1)


def factor_times(factor: Tensor, u: Tensor) -> Tensor:
    """D u for u of shape (K,): shape (d,). Not differentiable (it writes into ``out=``): for
    values taken under ``torch.no_grad()``."""
    rows = _blocks(factor)
    if not rows:
        return u @ factor.T
    n = rows * FACTOR_BLOCKS
    out = factor.new_empty(factor.shape[0])
    coefficients = u.expand(FACTOR_BLOCKS, 1, -1)
    torch.bmm(coefficients, _row_blocks(factor, rows), out=out[:n].view(FACTOR_BLOCKS, 1, rows))
    torch.mv(factor[n:], u, out=out[n:])
    return out


def add_factor_times_(y: Tensor, factor: Tensor, u: Tensor) -> Tensor:
    """y += D u in place, for y of shape (d,) and u of shape (K,); returns y."""
    rows = _blocks(factor)
    if not rows or not y.is_contiguous():
        return y.addmv_(factor, u)
    n = rows * FACTOR_BLOCKS
    coefficients = u.expand(FACTOR_BLOCKS, 1, -1)
    y[:n].view(FACTOR_BLOCKS, 1, rows).baddbmm_(coefficients, _row_blocks(factor, rows))
    y[n:].addmv_(factor[n:], u)
    return y


def tall_t_times(u: Tensor, v: Tensor) -> Tensor:
    """uᵀ v for u of shape (d, M) and v of shape (d, k): shape (M, k). For a tall u (d ≥
    BLOCKED_MIN, column-major, on the CPU) the blocks' products are added (the Fisher refresh's
    subspace iteration: at d = 1.9·10⁶, M = 36, k = 10, 27 ms against 81 ms; Dᵀx: 1.0 ms
    against 1.6 ms)."""
    rows = _blocks(u)
    if not rows:
        return u.T @ v
    n = rows * FACTOR_BLOCKS
    blocks = u[:n].view(FACTOR_BLOCKS, rows, -1)  # (B, c, M), each block column-major
    partial = torch.bmm(_row_blocks(v, rows), blocks).sum(dim=0)  # (k, M)
    return partial.addmm_(v[n:].T, u[n:]).T


def tall_times(u: Tensor, w: Tensor, out: Tensor | None = None) -> Tensor:
    """u w for u of shape (d, M) and w of shape (M, k): shape (d, k). For a tall u it is
    computed as (wᵀ uᵀ)ᵀ, column-major like u (67 ms against 114 ms at the sizes above; the same
    sums, rounded possibly otherwise), into ``out`` where given: a column-major (d, k) tensor
    kept by the caller saves the page faults of a new one (44 ms against 77 ms there). The
    plain path ignores ``out``."""
    if not _blocks(u):
        return u @ w
    if out is None:
        return (w.T @ u.T).T
    torch.mm(w.T, u.T, out=out.T)
    return out
