"""Seeded, class-balanced few-shot splits with a disjoint, equally small validation split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FewShotSplit:
    """Indices into the source training set (``train``, ``val``) and test set (``test``)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def few_shot_split(
    train_labels: np.ndarray,
    test_size: int,
    shots: int,
    val_shots: int,
    seed: int,
    test_labels_count: int | None = None,
) -> FewShotSplit:
    """``shots`` training and ``val_shots`` validation examples per class, disjoint, and a
    fixed-size random subset of the test set (all of it when ``test_size`` is 0 or too large).

    The same seed gives the same split. Raises ValueError when a class has too few examples.
    """
    if shots < 1 or val_shots < 0:
        raise ValueError(f"shots must be >= 1 and val_shots >= 0, got {shots} and {val_shots}")
    rng = np.random.default_rng(seed)
    classes = np.unique(train_labels)
    train, val = [], []
    for c in classes:
        members = np.flatnonzero(train_labels == c)
        if len(members) < shots + val_shots:
            raise ValueError(
                f"class {c} has {len(members)} training examples, fewer than "
                f"shots + val_shots = {shots + val_shots}"
            )
        chosen = rng.permutation(members)[: shots + val_shots]
        train.append(chosen[:shots])
        val.append(chosen[shots:])
    n_test = test_labels_count if test_labels_count is not None else 0
    if test_size and n_test > test_size:
        test = np.sort(rng.permutation(n_test)[:test_size])
    else:
        test = np.arange(n_test)
    return FewShotSplit(np.sort(np.concatenate(train)), np.sort(np.concatenate(val)), test)


def held_out_mask(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded, class-balanced test split: ``fraction`` of every class (at least one)."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        test[members[: max(1, round(fraction * len(members)))]] = True
    return test
