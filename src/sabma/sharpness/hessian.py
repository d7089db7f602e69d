"""Curvature of the training loss with respect to the Bayesian subset: HVPs, top eigenvalues, trace.

The loss is L(w) = mean cross-entropy over a fixed list of (non-augmented) batches, with the
subset at the flat weights w and everything else as in the model (normalization layers in eval
mode: the caller puts the model there). Hessian-vector products are forward-over-reverse
(``torch.func.jvp`` of ``torch.func.grad``), one batch at a time, so memory stays that of one
batch; the Hessian itself is never formed.

Top eigenvalues: Lanczos through ``scipy.sparse.linalg.eigsh`` on a ``LinearOperator`` (float64
on the SciPy side). The trace: Hutchinson's estimator with Rademacher probes, E[vᵀHv] = tr H,
reported with its standard error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.linalg import ArpackError, ArpackNoConvergence, LinearOperator, eigsh
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.functional import cross_entropy

from sabma.models.inputs import Inputs, call
from sabma.posterior.gaussian import GaussianPosterior

Batches = Sequence[tuple[Inputs, Tensor]]


def loss_at(posterior: GaussianPosterior, batches: Batches) -> Callable[[Tensor], Tensor]:
    """w ↦ L(w), the example-weighted mean cross-entropy over ``batches``."""
    total = sum(len(y) for _, y in batches)
    if total == 0:
        raise ValueError("the batch set for the Hessian is empty")

    def loss(w: Tensor) -> Tensor:
        parts = [
            cross_entropy(call(posterior.forward_with, x, w), y, reduction="sum")
            for x, y in batches
        ]
        return torch.stack(parts).sum() / total

    return loss


def hvp_fn(posterior: GaussianPosterior, batches: Batches, w: Tensor) -> Callable[[Tensor], Tensor]:
    """v ↦ H(w) v for the loss of :func:`loss_at`, batch by batch (forward-over-reverse)."""
    total = sum(len(y) for _, y in batches)
    w = w.detach()

    def per_batch(x: Inputs, y: Tensor) -> Callable[[Tensor], Tensor]:
        def batch_loss(u: Tensor) -> Tensor:
            return cross_entropy(call(posterior.forward_with, x, u), y, reduction="sum") / total

        return torch.func.grad(batch_loss)

    grads = [per_batch(x, y) for x, y in batches]

    def hvp(v: Tensor) -> Tensor:
        v = v.to(w)
        out = torch.zeros_like(w)
        # fused attention kernels have no forward-mode derivative; the composite one has
        with sdpa_kernel(SDPBackend.MATH):
            for grad in grads:
                out += torch.func.jvp(grad, (w,), (v,))[1]
        return out

    return hvp


@dataclass
class TopEigen:
    """Top-k eigenvalues (descending) and, when asked for, their unit eigenvectors (k, d);
    ``error`` says why a solve failed (values then None)."""

    values: list[float] | None
    error: str | None = None
    vectors: Tensor | None = None

    @property
    def ok(self) -> bool:
        return self.values is not None


def top_eigenvalues(
    hvp: Callable[[Tensor], Tensor],
    dim: int,
    k: int = 5,
    *,
    tol: float = 1e-3,
    max_matvecs: int = 300,
    seed: int = 0,
    vectors: bool = False,
) -> TopEigen:
    """The k algebraically largest eigenvalues of the symmetric operator ``hvp`` (Lanczos,
    ARPACK). A solve that does not converge within ``max_matvecs`` products is reported as
    failed, never returned as numbers."""
    if not 1 <= k < dim:
        raise ValueError(f"top-k needs 1 <= k < d = {dim}, got k = {k}")
    calls = 0

    def matvec(v: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls > max_matvecs:
            raise _TooManyProducts
        t = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).reshape(-1))
        return hvp(t).detach().double().cpu().numpy()

    operator = LinearOperator((dim, dim), matvec=matvec, dtype=np.float64)
    start = np.random.default_rng(seed).standard_normal(dim)
    try:
        solved = eigsh(operator, k=k, which="LA", tol=tol, v0=start, return_eigenvectors=vectors)
    except _TooManyProducts:
        return TopEigen(None, f"no convergence within {max_matvecs} Hessian-vector products")
    except ArpackNoConvergence:
        return TopEigen(None, "ARPACK did not converge")
    except ArpackError as err:
        return TopEigen(None, f"ARPACK error: {err}")
    values, basis = solved if vectors else (solved, None)
    order = np.argsort(values)[::-1]
    values = values[order]
    if not np.all(np.isfinite(values)):
        return TopEigen(None, "non-finite eigenvalue")
    found = None if basis is None else torch.from_numpy(np.ascontiguousarray(basis[:, order].T))
    return TopEigen([float(v) for v in values], vectors=found)


class _TooManyProducts(Exception):
    pass


@dataclass
class TraceEstimate:
    mean: float
    stderr: float
    probes: int


def hutchinson_trace(
    hvp: Callable[[Tensor], Tensor], dim: int, probes: int = 50, seed: int = 0
) -> TraceEstimate:
    """tr H ≈ mean of vᵀHv over Rademacher probes v; the standard error is that of the mean."""
    if probes < 2:
        raise ValueError(f"the trace estimate needs at least 2 probes, got {probes}")
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(probes):
        v = torch.randint(0, 2, (dim,), generator=generator, dtype=torch.float64) * 2 - 1
        values.append(float(torch.dot(hvp(v).double(), v)))
    mean = sum(values) / probes
    var = sum((x - mean) ** 2 for x in values) / (probes - 1)
    return TraceEstimate(mean, math.sqrt(var / probes), probes)
