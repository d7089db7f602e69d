"""Distribution shift for text: character and word corruptions at severities 1–5.

Each corruption edits a text at random with a per-unit probability that grows with the
severity; the draws come from a NumPy generator seeded by (corruption, severity, seed), so a
corrupted test set is the same every time.

* ``typo``: a letter becomes a neighbour on a QWERTY keyboard (case kept);
* ``char_delete``: a letter is deleted;
* ``char_swap``: a letter swaps places with the next one;
* ``word_drop``: a word is dropped (at least one word is kept);
* ``word_swap``: a word swaps places with the next one.

Character corruptions touch letters only (spaces, digits and punctuation stay), so the word
structure the tokenizer sees degrades gradually.
"""

from __future__ import annotations

import zlib

import numpy as np

from sabma.shift.corruptions import check_severities

#: per-letter probability of the character corruptions, per severity 1–5
CHAR_RATES = (0.03, 0.06, 0.10, 0.15, 0.22)
#: per-word probability of the word corruptions, per severity 1–5
WORD_RATES = (0.05, 0.10, 0.18, 0.28, 0.40)

_KEYBOARD = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_NEIGHBOURS: dict[str, str] = {}
for _row, _keys in enumerate(_KEYBOARD):
    for _col, _key in enumerate(_keys):
        near = [
            _KEYBOARD[r][c]
            for r in (_row - 1, _row, _row + 1)
            for c in (_col - 1, _col, _col + 1)
            if 0 <= r < len(_KEYBOARD) and 0 <= c < len(_KEYBOARD[r]) and (r, c) != (_row, _col)
        ]
        _NEIGHBOURS[_key] = "".join(near)


def _typo(text: str, rate: float, rng: np.random.Generator) -> str:
    out = []
    for ch in text:
        near = _NEIGHBOURS.get(ch.lower())
        if near and rng.random() < rate:
            new = near[rng.integers(len(near))]
            ch = new.upper() if ch.isupper() else new
        out.append(ch)
    return "".join(out)


def _char_delete(text: str, rate: float, rng: np.random.Generator) -> str:
    return "".join(ch for ch in text if not (ch.isalpha() and rng.random() < rate))


def _char_swap(text: str, rate: float, rng: np.random.Generator) -> str:
    chars = list(text)
    i = 0
    while i < len(chars) - 1:
        if chars[i].isalpha() and chars[i + 1].isalpha() and rng.random() < rate:
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
            i += 2
        else:
            i += 1
    return "".join(chars)


def _word_drop(text: str, rate: float, rng: np.random.Generator) -> str:
    words = text.split()
    if len(words) <= 1:
        return text
    kept = [w for w in words if rng.random() >= rate]
    return " ".join(kept or [words[rng.integers(len(words))]])


def _word_swap(text: str, rate: float, rng: np.random.Generator) -> str:
    words = text.split()
    i = 0
    while i < len(words) - 1:
        if rng.random() < rate:
            words[i], words[i + 1] = words[i + 1], words[i]
            i += 2
        else:
            i += 1
    return " ".join(words)


TEXT_CORRUPTIONS = {
    "typo": (_typo, CHAR_RATES),
    "char_delete": (_char_delete, CHAR_RATES),
    "char_swap": (_char_swap, CHAR_RATES),
    "word_drop": (_word_drop, WORD_RATES),
    "word_swap": (_word_swap, WORD_RATES),
}


def corrupt_texts(texts: list[str], name: str, severity: int, seed: int = 0) -> list[str]:
    """``texts`` with corruption ``name`` at ``severity`` (1–5), reproducibly."""
    if name not in TEXT_CORRUPTIONS:
        raise ValueError(f"unknown text corruption {name!r}; choose from {list(TEXT_CORRUPTIONS)}")
    check_severities([severity])
    edit, rates = TEXT_CORRUPTIONS[name]
    rng = np.random.default_rng([zlib.crc32(name.encode()), severity, seed])
    return [edit(text, rates[severity - 1], rng) for text in texts]
