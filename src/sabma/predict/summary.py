"""What a predictive says of each input beyond its probabilities: the figures uncertainty scores
are made of (out-of-distribution detection, selective prediction).

For S draws w_s with logits f_s = f(x; w_s) and p_s = softmax(f_s), one pass gives per input

* ``log_probs``: log p̄, p̄ = (1/S) Σ_s p_s (the BMA; the same value :func:`predict_log_probs`
  returns);
* ``logits``: (1/S) Σ_s f_s, the averaged logits (the energy score's);
* ``expected_entropy``: (1/S) Σ_s H[p_s] — so that the mutual information
  I = H[p̄] − (1/S) Σ_s H[p_s] ≥ 0, the epistemic part of the predictive entropy, can be read;
* with a temperature T, the same mixture and expected entropy of the tempered members
  softmax(f_s / T) (``tempered_log_probs``, ``tempered_expected_entropy``): the mutual
  information at the run's temperature, ≥ 0 as well.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from sabma.predict.temperature import apply_temperature


def entropy(log_probs: Tensor) -> Tensor:
    """H[p] = −Σ_c p_c log p_c over the last axis (0·log 0 = 0)."""
    return -(log_probs.exp() * log_probs.nan_to_num(neginf=0.0)).sum(-1)


@dataclass
class Predictions:
    """Per-input figures of a predictive over a dataset (see the module docstring); the
    optional ones are None where the predictive has no draws or no logits."""

    log_probs: Tensor
    logits: Tensor | None = None
    expected_entropy: Tensor | None = None
    tempered_log_probs: Tensor | None = None
    tempered_expected_entropy: Tensor | None = None

    def mutual_information(self, tempered: bool = False) -> Tensor | None:
        """I = H[p̄] − E_s H[p_s] per input (clamped at 0 against rounding); None without
        draws."""
        mixture = self.tempered_log_probs if tempered else self.log_probs
        expected = self.tempered_expected_entropy if tempered else self.expected_entropy
        if mixture is None or expected is None:
            return None
        return (entropy(mixture) - expected).clamp_min(0.0)

    def apply(self, fn: Callable[[Tensor], Tensor]) -> Predictions:
        """``fn`` applied to every figure present (e.g. a row selection, a device move)."""
        return _combine([self], lambda t: fn(t[0]), lambda t: fn(t[0]))


def batch_summary(logits: Tensor, temperature: float | None = None) -> Predictions:
    """The figures of one batch from its draws' logits (S, batch, classes)."""
    log_probs = torch.log_softmax(logits, dim=-1)
    count = math.log(logits.shape[0])
    out = Predictions(
        log_probs=torch.logsumexp(log_probs, dim=0) - count,
        logits=logits.mean(0),
        expected_entropy=entropy(log_probs).mean(0),
    )
    if temperature is not None:
        tempered = torch.log_softmax(logits / temperature, dim=-1)
        out.tempered_log_probs = torch.logsumexp(tempered, dim=0) - count
        out.tempered_expected_entropy = entropy(tempered).mean(0)
    return out


#: the figures that are mixtures over draws (log-probabilities); the others are averages
MIXTURES = ("log_probs", "tempered_log_probs")


def _combine(
    parts: list[Predictions],
    mixture: Callable[[list[Tensor]], Tensor],
    average: Callable[[list[Tensor]], Tensor],
) -> Predictions:
    values: dict[str, Tensor | None] = {}
    for f in fields(Predictions):
        tensors = [getattr(p, f.name) for p in parts]
        if any(t is None for t in tensors):
            values[f.name] = None
        else:
            values[f.name] = (mixture if f.name in MIXTURES else average)(tensors)
    return Predictions(**values)  # type: ignore[arg-type]


def concatenate(parts: list[Predictions]) -> Predictions:
    """Batches one after another (rows in order)."""
    return _combine(parts, torch.cat, torch.cat)


def pool_draws(parts: list[Predictions], counts: list[int]) -> Predictions:
    """The figures over the draws of all ``parts`` (the same inputs, ``counts`` draws each):
    mixtures by log Σ_s p_s accumulated with log-sum-exp, averages weighted by the counts."""
    total = sum(counts)

    def mixture(tensors: list[Tensor]) -> Tensor:
        acc: Tensor | None = None
        for t, n in zip(tensors, counts, strict=True):
            summed = t + math.log(n)
            acc = summed if acc is None else torch.logaddexp(acc, summed)
        assert acc is not None
        return acc - math.log(total)

    def average(tensors: list[Tensor]) -> Tensor:
        return sum(t * (n / total) for t, n in zip(tensors, counts, strict=True))  # type: ignore[return-value]

    return _combine(parts, mixture, average)


#: the uncertainty scores (higher: less sure): negative max-probability, predictive entropy,
#: energy of the averaged logits, mutual information (methods with draws)
SCORES = ("msp", "entropy", "energy", "mi")


def uncertainty_scores(
    predictions: Predictions, temperature: float | None = None, draws: bool = True
) -> dict[str, Tensor]:
    """Per-input uncertainty scores (:data:`SCORES`; those the predictive has). With a
    temperature T: max-probability and entropy of the temperature-scaled predictive (as the
    clean metrics scale it), energy −T·log Σ_c exp(f̄_c / T), and the tempered members' mutual
    information; ``draws=False`` (a point estimate) leaves the mutual information out."""
    log_probs = predictions.log_probs
    if temperature is not None:
        log_probs = apply_temperature(log_probs, temperature)
    scores = {"msp": -log_probs.max(-1).values.exp(), "entropy": entropy(log_probs)}
    if predictions.logits is not None:
        t = 1.0 if temperature is None else temperature
        scores["energy"] = -t * torch.logsumexp(predictions.logits / t, dim=-1)
    information = predictions.mutual_information(tempered=temperature is not None)
    if draws and information is not None:
        scores["mi"] = information
    return scores
