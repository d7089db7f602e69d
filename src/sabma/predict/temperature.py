"""Temperature scaling (Guo et al., 2017) of a predictive's log-probabilities.

p_T(y | x) = softmax(log p̄(y | x) / T). T is fitted on validation data by minimising the NLL,
on the same predictive it is applied to (for BMA: the averaged log-probabilities, not one sample).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.functional import cross_entropy


def apply_temperature(log_probs: Tensor, temperature: float) -> Tensor:
    return torch.log_softmax(log_probs / temperature, dim=-1)


def fit_temperature(
    log_probs: Tensor,
    labels: Tensor,
    bounds: tuple[float, float] = (0.05, 20.0),
    iterations: int = 80,
) -> float:
    """T minimising NLL(softmax(log_probs / T), labels), by golden-section search on log T.

    The NLL is convex in 1/T, hence unimodal in log T, so the search finds the optimum in
    ``bounds`` to about 1e-8 relative precision.
    """
    if len(labels) == 0:
        raise ValueError("cannot fit a temperature on an empty validation set")
    z = log_probs.double()

    def nll(log_t: float) -> float:
        return float(cross_entropy(z / torch.exp(torch.tensor(log_t, dtype=torch.float64)), labels))

    lo, hi = (torch.log(torch.tensor(b)).item() for b in bounds)
    ratio = (5**0.5 - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(iterations):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(b)
    return float(torch.exp(torch.tensor((lo + hi) / 2)))
