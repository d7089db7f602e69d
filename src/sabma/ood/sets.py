"""The out-of-distribution (OOD) sets a run can be evaluated against, from one SPEC each.

Presets (offline; docs/data.md):

* ``near`` — images: the test images of the dataset's *other* classes, for a run trained on a
  class subset (``data.classes``; e.g. 5 Fashion-MNIST classes, OOD = the other 5): the same
  source, the same pipeline. Texts: the Rotten Tomatoes *plot* synopses that ship beside the
  fresh/rotten snippets (same corpus and domain, not opinions).
* ``far`` — images: scikit-learn's handwritten digits (1,797 8×8 grey images, bundled with the
  package), scaled to 0–255 and resized like the run's images (grey repeated to RGB for colour
  runs). Texts: first paragraphs of the docstrings of Python's standard library.
* ``digits``, ``plots``, ``docstrings``: the same sets by name.

Any other SPEC: ``classes:I,J,…`` (test images or texts of those classes of the run's own
dataset, none of them trained on), ``fashion_mnist`` or ``fashion_mnist:I,J,…`` (the built-in
set's test split, or some of its classes), a ``.npz`` file (the array ``x_ood``, ``x_test`` or
``x``), an image folder (every image under it), a CSV file (its ``text`` column) or a ``.txt``
file (one text per line).

Every set is checked against the run — texts for a text run, images of the run's channel layout
(a colour set against a grey run would be told apart by its colour alone) — and a set larger
than the run's test split is cut to a fixed random subset of that size (the same for every
method).
"""

from __future__ import annotations

import csv
import importlib
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sabma.config import Config
from sabma.data.fashion_mnist import CLASSES as FASHION_CLASSES
from sabma.data.fashion_mnist import load_fashion_mnist
from sabma.data.tasks import (
    Task,
    load_raw_images,
    load_raw_texts,
    other_classes_test,
)
from sabma.data.text import _open, read_csv_texts, rotten_tomatoes_path
from sabma.data.user import IMAGE_SUFFIXES, _decode

PRESETS = {
    "image": {"near": "classes:rest", "far": "digits"},
    "text": {"near": "plots", "far": "docstrings"},
}

#: standard-library modules whose docstrings make the far text set (stable across versions)
DOC_MODULES = (
    "argparse", "base64", "bisect", "calendar", "collections", "contextlib", "copy", "csv",
    "dataclasses", "datetime", "decimal", "difflib", "email.message", "enum", "fnmatch",
    "fractions", "functools", "glob", "gzip", "hashlib", "heapq", "hmac", "http.client",
    "io", "ipaddress", "itertools", "json", "logging", "mailbox", "os", "pathlib", "pickle",
    "pprint", "queue", "random", "re", "sched", "secrets", "shlex", "shutil", "socket",
    "sqlite3", "statistics", "string", "subprocess", "tarfile", "tempfile", "textwrap",
    "threading", "tokenize", "typing", "unittest", "urllib.parse", "uuid", "wave",
    "xml.dom.minidom", "zipfile",
)  # fmt: skip


@dataclass
class OODSet:
    """One OOD set: its name in the results, where it came from, its raw items (uint8 images or
    strings, as the run's test split before preparation)."""

    name: str
    source: str
    raw: Any

    def __len__(self) -> int:
        return len(self.raw)


def resolve(spec: str, kind: str) -> str:
    """A preset's underlying SPEC for a run of ``kind`` ("image"/"text"); others unchanged."""
    return PRESETS[kind].get(spec, spec)


def load_ood_set(spec: str, cfg: Config, task: Task, size: int = 0, seed: int = 0) -> OODSet:
    """The OOD set ``spec`` for ``task``'s run, checked against it and cut to ``size`` items
    (0: as many as the run's test split) by a ``seed``-ed choice; ValueError with one line
    naming the set for anything that cannot be used."""
    name = spec
    source, raw = _load(resolve(spec, task.kind), cfg, task)
    if len(raw) == 0:
        raise ValueError(f"OOD set {name!r} ({source}) holds no items")
    if task.kind == "image":
        raw = _match_layout(name, raw, task.x_test_raw, adapt=spec in ("near", "far", "digits"))
    limit = size or len(task.y_test)
    if len(raw) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(raw), limit, replace=False))
        raw = raw[keep] if isinstance(raw, np.ndarray) else [raw[i] for i in keep]
    return OODSet(name, source, raw)


def _load(spec: str, cfg: Config, task: Task) -> tuple[str, Any]:
    """(a description, the raw items) of a resolved SPEC."""
    texts = task.kind == "text"
    if spec == "classes:rest" or spec.startswith("classes:"):
        return _own_classes(spec, cfg, texts)
    if spec == "digits":
        _need_kind(spec, "image", task.kind)
        return "scikit-learn's handwritten digits (8×8)", _digits()
    if spec == "plots":
        _need_kind(spec, "text", task.kind)
        return "Rotten Tomatoes plot synopses", _plots()
    if spec == "docstrings":
        _need_kind(spec, "text", task.kind)
        return "Python standard-library docstrings", _docstrings()
    if spec.split(":")[0] == "fashion_mnist":
        _need_kind(spec, "image", task.kind)
        return _fashion_mnist(spec, cfg)
    return _from_path(spec, task.kind)


def _need_kind(spec: str, kind: str, run_kind: str) -> None:
    if kind != run_kind:
        what = {"image": "images", "text": "texts"}
        raise ValueError(f"OOD set {spec!r} holds {what[kind]}, but the run reads {what[run_kind]}")


def _indices(text: str, spec: str) -> list[int]:
    try:
        return [int(i) for i in text.split(",") if i.strip()]
    except ValueError:
        raise ValueError(f"OOD set {spec!r}: expected class indices like 5,6,7") from None


def _own_classes(spec: str, cfg: Config, texts: bool) -> tuple[str, Any]:
    raw = load_raw_texts(cfg.data) if texts else load_raw_images(cfg.data)
    trained = cfg.data.classes
    if spec == "classes:rest":
        if not trained:
            raise ValueError(
                "OOD set 'near' is the classes the run was not trained on, and this run was "
                "trained on all of them: train on a subset (--set data.classes=[0,1,2,3,4]), "
                "or name another set (far, a file or folder)"
            )
        rest = [i for i in range(len(raw.classes)) if i not in trained]
        return f"the other {len(rest)} classes of {cfg.data.dataset}", other_classes_test(
            raw, trained
        )
    chosen = _indices(spec.split(":", 1)[1], spec)
    bad = [c for c in chosen if not 0 <= c < len(raw.classes)]
    if bad or not chosen:
        raise ValueError(
            f"OOD set {spec!r}: expected class indices of {cfg.data.dataset} "
            f"(0..{len(raw.classes) - 1}), got {chosen}"
        )
    overlap = [c for c in chosen if not trained or c in trained]
    if overlap:
        raise ValueError(
            f"OOD set {spec!r}: classes {overlap} are in the run's training classes "
            f"({trained or 'all of them'})"
        )
    rest = [i for i in range(len(raw.classes)) if i not in chosen]
    return f"classes {chosen} of {cfg.data.dataset}", other_classes_test(raw, rest)


def _fashion_mnist(spec: str, cfg: Config) -> tuple[str, Any]:
    root = cfg.data.root if cfg.data.dataset == "fashion_mnist" else None
    images, labels = load_fashion_mnist(root)["test"]
    if ":" not in spec:
        return "the Fashion-MNIST test split", images
    chosen = _indices(spec.split(":", 1)[1], spec)
    bad = [c for c in chosen if not 0 <= c < len(FASHION_CLASSES)]
    if bad or not chosen:
        raise ValueError(f"OOD set {spec!r}: Fashion-MNIST has classes 0..9, got {chosen}")
    return f"Fashion-MNIST classes {chosen}", images[np.isin(labels, chosen)]


def _digits() -> np.ndarray:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "the 'far' image set is scikit-learn's digits: pip install 'sabma[ood]'"
        ) from None
    images = load_digits().images  # (1797, 8, 8), values 0..16
    return np.round(images * (255.0 / 16.0)).astype(np.uint8)


def _plots() -> list[str]:
    texts, labels = read_csv_texts(rotten_tomatoes_path(), "text", "category")
    return [t for t, label in zip(texts, labels, strict=True) if label == "plot"]


def _docstrings() -> list[str]:
    """The first paragraph of every public function's and class's docstring in
    :data:`DOC_MODULES` (20–400 characters, whitespace normalised, each once, sorted)."""
    found: set[str] = set()
    for name in DOC_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for attr, value in vars(module).items():
            if attr.startswith("_") or not (inspect.isfunction(value) or inspect.isclass(value)):
                continue
            doc = inspect.getdoc(value) or ""
            paragraph = " ".join(doc.split("\n\n")[0].split())
            if 20 <= len(paragraph) <= 400:
                found.add(paragraph)
    return sorted(found)


def _from_path(spec: str, kind: str) -> tuple[str, Any]:
    path = Path(spec.split(":", 1)[1] if re.match(r"^(npz|folder|csv|txt):", spec) else spec)
    if not path.exists():
        raise ValueError(
            f"OOD set {spec!r} is neither a preset (near, far, digits, plots, docstrings), "
            "classes:I,J, fashion_mnist[:I,J] nor an existing file or folder"
        )
    suffixes = "".join(path.suffixes).lower()
    if path.is_dir():
        _need_kind(spec, "image", kind)
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        return f"the images under {path}", _decode(files, path) if files else np.zeros((0, 1, 1))
    if suffixes.endswith(".npz"):
        _need_kind(spec, "image", kind)
        return f"{path}", _npz_images(path, spec)
    if suffixes.endswith((".csv", ".csv.gz", ".csv.bz2")):
        _need_kind(spec, "text", kind)
        return f"the 'text' column of {path}", _csv_column(path, spec)
    if suffixes.endswith(".txt"):
        _need_kind(spec, "text", kind)
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        return f"the lines of {path}", [line for line in lines if line.strip()]
    raise ValueError(f"OOD set {spec!r}: expected a .npz, .csv or .txt file or an image folder")


def _npz_images(path: Path, spec: str) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as data:
            key = next((k for k in ("x_ood", "x_test", "x") if k in data.files), None)
            if key is None:
                raise ValueError(
                    f"OOD set {spec!r}: {path} has no array x_ood, x_test or x "
                    f"(has {sorted(data.files)})"
                )
            images = np.asarray(data[key])
    except (OSError, EOFError) as err:
        raise ValueError(f"OOD set {spec!r}: {path} is not a readable .npz file ({err})") from None
    if images.dtype != np.uint8:
        raise ValueError(f"OOD set {spec!r}: images must be uint8 (0–255), got {images.dtype}")
    return images[..., 0] if images.ndim == 4 and images.shape[-1] == 1 else images


def _csv_column(path: Path, spec: str) -> list[str]:
    try:
        with _open(path) as handle:
            reader = csv.DictReader(handle)
            if "text" not in (reader.fieldnames or []):
                raise ValueError(
                    f"OOD set {spec!r}: {path} has no 'text' column ({reader.fieldnames})"
                )
            return [row["text"] for row in reader if (row.get("text") or "").strip()]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"OOD set {spec!r}: {path} is not a readable CSV file ({err})") from None


def _match_layout(name: str, raw: Any, reference: Any, adapt: bool) -> np.ndarray:
    """Images of the run's layout: grey (n, H, W) or colour (n, H, W, 3). A preset is converted
    (grey repeated to RGB); a user's set of the other layout is refused."""
    images = np.asarray(raw)
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3):
        raise ValueError(
            f"OOD set {name!r}: images must be (n, H, W) or (n, H, W, 3), got {images.shape}"
        )
    colour, run_colour = images.ndim == 4, np.asarray(reference).ndim == 4
    if colour == run_colour:
        return images
    if adapt and not colour:
        return np.repeat(images[..., None], 3, axis=-1)
    layout = {True: "colour (n, H, W, 3)", False: "grey (n, H, W)"}
    raise ValueError(
        f"OOD set {name!r} holds {layout[colour]} images {images.shape}, the run's are "
        f"{layout[run_colour]}: convert them, so that colour alone does not give them away"
    )
