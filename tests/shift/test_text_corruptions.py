"""Text corruptions: seeded, each of its kind, and stronger at every severity."""

from __future__ import annotations

import difflib
import itertools

import numpy as np
import pytest

from sabma.shift.text import TEXT_CORRUPTIONS, corrupt_texts

TEXTS = [
    "A gripping, beautifully shot thriller that never lets go of its audience.",
    "The plot is thin and the jokes fall flat, but the lead is charming enough.",
    "An overlong mess; even the soundtrack cannot save it from itself.",
    "Quietly moving and honest about grief, loss and the ordinary days after.",
] * 25


def _distance(a: list[str], b: list[str]) -> float:
    return float(
        np.mean(
            [1.0 - difflib.SequenceMatcher(None, x, y).ratio() for x, y in zip(a, b, strict=True)]
        )
    )


@pytest.mark.parametrize("name", list(TEXT_CORRUPTIONS))
def test_every_corruption_is_seeded_and_grows_with_severity(name: str) -> None:
    levels = [corrupt_texts(TEXTS, name, s, seed=0) for s in range(1, 6)]
    assert corrupt_texts(TEXTS, name, 3, seed=0) == levels[2]
    assert corrupt_texts(TEXTS, name, 3, seed=1) != levels[2]
    distances = [_distance(TEXTS, level) for level in levels]
    assert all(a < b for a, b in itertools.pairwise(distances)), distances
    assert distances[0] > 0


def test_each_corruption_does_what_its_name_says() -> None:
    text = ["the quick brown fox jumps over the lazy dog again and again today"] * 40
    typo = corrupt_texts(text, "typo", 5)
    assert all(len(t) == len(text[0]) for t in typo)  # replaced, not removed
    deleted = corrupt_texts(text, "char_delete", 5)
    assert all(len(t) < len(text[0]) and t.count(" ") == text[0].count(" ") for t in deleted)
    swapped = corrupt_texts(text, "char_swap", 5)
    assert all(sorted(t) == sorted(text[0]) for t in swapped)  # same letters, other order
    dropped = corrupt_texts(text, "word_drop", 5)
    assert all(set(t.split()) <= set(text[0].split()) and len(t.split()) >= 1 for t in dropped)
    shuffled = corrupt_texts(text, "word_swap", 5)
    assert all(sorted(t.split()) == sorted(text[0].split()) for t in shuffled)
    assert corrupt_texts(["single"], "word_drop", 5) == ["single"]
    assert corrupt_texts(["Ünïcode, 123!"], "char_delete", 1)[0].endswith(", 123!")


def test_bad_names_and_severities_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown text corruption 'blur'; choose from \['typo'"):
        corrupt_texts(TEXTS, "blur", 1)
    with pytest.raises(ValueError, match="severities must be integers from 1 to 5"):
        corrupt_texts(TEXTS, "typo", 6)
