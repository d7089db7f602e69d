"""The user's own image data: a ``.npz`` file, an image-folder tree, CIFAR-10/100 (python layout).

Every reader returns a :class:`RawImages`: uint8 images (n, H, W) or (n, H, W, 3) and int64 labels
for a training and a test split, with the class names. The k-shot split, preprocessing and the
corruption benchmark then work the same as for Fashion-MNIST.

* ``npz``: one file with ``x_train, y_train, x_test, y_test`` (uint8 images, HxW or HxWxC with C
  1 or 3; integer labels 0..K−1) and optionally ``classes`` (K names). Read with
  ``allow_pickle=False``.
* ``image_folder``: ``root/train/<class>/*`` and ``root/test/<class>/*`` (PNG, JPEG, BMP, …); or
  only ``root/<class>/*``, of which a seeded ``data.test_fraction`` (20 %) of every class becomes
  the test split. Images are converted to RGB (grey when every image is grey) and resized to the
  first image's size.
* ``cifar10`` / ``cifar100``: the folders ``cifar-10-batches-py`` (``data_batch_1..5``,
  ``test_batch``, ``batches.meta``) and ``cifar-100-python`` (``train``, ``test``, ``meta``) as
  released. They are pickles: they are read by an unpickler that can build plain containers and
  numpy arrays only, so a crafted file cannot run code.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sabma.data.splits import held_out_mask

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class RawImages:
    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    classes: tuple[str, ...]

    def check(self, source: str) -> RawImages:
        """Refuse what the pipeline cannot use, with one line naming ``source``."""
        k = len(self.classes)
        if k < 2:
            raise ValueError(f"{source}: at least 2 classes are needed, found {k}")
        for split, (images, labels) in (("train", self.train), ("test", self.test)):
            if images.dtype != np.uint8:
                raise ValueError(
                    f"{source}: {split} images must be uint8 (0–255), got {images.dtype}"
                )
            if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
                raise ValueError(
                    f"{source}: {split} images must be (n, H, W) or (n, H, W, 1|3), "
                    f"got {images.shape}"
                )
            if labels.ndim != 1 or len(labels) != len(images):
                raise ValueError(
                    f"{source}: {len(images)} {split} images but labels of shape {labels.shape}"
                )
            if not np.issubdtype(labels.dtype, np.integer):
                raise ValueError(f"{source}: {split} labels must be integers, got {labels.dtype}")
            if labels.size and (labels.min() < 0 or labels.max() >= k):
                raise ValueError(
                    f"{source}: {split} labels must lie in 0..{k - 1} ({k} classes), "
                    f"found {labels.min()}..{labels.max()}"
                )
        self._check_classes_present(source)
        if self.train[0].shape[1:] != self.test[0].shape[1:]:
            raise ValueError(
                f"{source}: train images {self.train[0].shape[1:]} and test images "
                f"{self.test[0].shape[1:]} differ in shape"
            )
        self.train = (self.train[0], self.train[1].astype(np.int64))
        self.test = (self.test[0], self.test[1].astype(np.int64))
        return self

    def _check_classes_present(self, source: str) -> None:
        """Every class needs training examples: a class without any is a typo in the labels (a
        stray 99 among 0..9) or an empty folder, never something to train a head for."""
        counts = np.bincount(self.train[1].astype(np.int64), minlength=len(self.classes))
        empty = [self.classes[i] for i in np.flatnonzero(counts == 0)]
        if empty:
            shown = ", ".join(empty[:8]) + (f", … ({len(empty)} in all)" if len(empty) > 8 else "")
            gap = int(np.flatnonzero(counts == 0)[0])
            above = [
                f"{self.classes[i]} ({counts[i]} examples)"
                for i in np.flatnonzero(counts)
                if i > gap
            ][:3]
            hint = f"; present above the gap: {', '.join(above)} — stray labels?" if above else ""
            raise ValueError(
                f"{source}: classes without training examples: {shown}{hint} (labels must be "
                "0..C-1 with every class present in training)"
            )


def _need(root: str | None, what: str) -> Path:
    if not root:
        raise ValueError(f"data.root must name {what}")
    path = Path(root)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist ({what} expected)")
    return path

    # --- .npz ------------------------------------------------------------------------------------


def _integer_labels(labels: np.ndarray, path: Path, name: str) -> np.ndarray:
    """Integer labels; float labels whose values are all whole numbers are accepted as such."""
    if np.issubdtype(labels.dtype, np.integer) or labels.size == 0:
        return labels
    if np.issubdtype(labels.dtype, np.floating):
        finite = np.isfinite(labels).all()
        if finite and np.array_equal(labels, np.round(labels)):
            return labels.astype(np.int64)
        bad = labels[~np.isfinite(labels) | (labels != np.round(labels))][:3]
        raise ValueError(
            f"{path}: {name} must be whole class indices, found {', '.join(map(str, bad))}"
        )
    raise ValueError(f"{path}: {name} must be integers, got {labels.dtype}")


def load_npz(root: str | None) -> RawImages:
    path = _need(root, "a .npz file with x_train, y_train, x_test, y_test")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in data]
            if missing:
                raise ValueError(f"{path}: missing arrays {missing} (has {sorted(data.files)})")
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable .npz file ({err})") from None
    except ValueError as err:
        if str(err).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not a readable .npz file ({err})") from None
    for name in ("y_train", "y_test"):
        arrays[name] = _integer_labels(arrays[name], path, name)
    labels = np.concatenate([arrays["y_train"].reshape(-1), arrays["y_test"].reshape(-1)])
    if "classes" in arrays:
        classes = tuple(str(c) for c in arrays["classes"])
    else:
        count = (
            int(labels.max()) + 1 if labels.size and np.issubdtype(labels.dtype, np.integer) else 0
        )
        classes = tuple(str(c) for c in range(count))
    raw = RawImages(
        (_squeeze_channel(arrays["x_train"]), arrays["y_train"]),
        (_squeeze_channel(arrays["x_test"]), arrays["y_test"]),
        classes,
    )
    return raw.check(str(path))


def _squeeze_channel(images: np.ndarray) -> np.ndarray:
    return images[..., 0] if images.ndim == 4 and images.shape[-1] == 1 else images


# --- image folders -------------------------------------------------------------------------
def load_image_folder(root: str | None, seed: int, test_fraction: float = 0.2) -> RawImages:
    path = _need(root, "a folder with one sub-folder per class (optionally under train/ and test/)")
    if (path / "train").is_dir() and (path / "test").is_dir():
        classes = _class_names(path / "train")
        unknown = sorted(set(_class_names(path / "test", minimum=0)) - set(classes))
        if unknown:
            raise ValueError(
                f"{path / 'test'}: class folders that training does not have: "
                f"{', '.join(unknown[:8])} (test classes must be among {path / 'train'}'s)"
            )
        train = _read_tree(path / "train", classes)
        test = _read_tree(path / "test", classes)
    else:
        classes = _class_names(path)
        files, labels = _read_tree(path, classes)
        is_test = held_out_mask(labels, test_fraction, seed)
        train, test = (files[~is_test], labels[~is_test]), (files[is_test], labels[is_test])
    images = _decode([*train[0], *test[0]], path)
    n = len(train[0])
    raw = RawImages((images[:n], train[1]), (images[n:], test[1]), classes)
    return raw.check(str(path))


def _class_names(folder: Path, minimum: int = 2) -> tuple[str, ...]:
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(names) < minimum:
        raise ValueError(f"{folder}: expected one sub-folder per class, found {len(names)}")
    return tuple(names)


def _read_tree(folder: Path, classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    files, labels = [], []
    for label, name in enumerate(classes):
        sub = folder / name
        found = (
            sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if sub.is_dir()
            else []
        )
        files += found
        labels += [label] * len(found)
    if not files:
        raise ValueError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in the class folders")
    return np.array(files, dtype=object), np.array(labels, dtype=np.int64)


def _decode(files: list[Path], root: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    pictures = []
    for file in files:
        try:
            with Image.open(file) as image:
                image.load()
                pictures.append(image.copy())
        except (OSError, UnidentifiedImageError) as err:
            raise ValueError(f"{file}: not a readable image ({err})") from None
    grey = all(p.mode in ("L", "1", "I;16", "I") for p in pictures)
    size = pictures[0].size
    out = []
    for picture in pictures:
        picture = picture.convert("L" if grey else "RGB")
        if picture.size != size:
            picture = picture.resize(size, Image.Resampling.BILINEAR)
        out.append(np.asarray(picture, dtype=np.uint8))
    return np.stack(out)


# --- CIFAR ---------------------------------------------------------------------------------
_ARRAY_CLASSES = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }
)


class _ArraysOnly(pickle.Unpickler):
    """Builds plain containers and numpy arrays; any other class is refused (no code runs)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ARRAY_CLASSES:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name} (only arrays are allowed)")


def _unpickle(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (expected the released CIFAR python layout)")
    try:
        with path.open("rb") as handle:
            value = _ArraysOnly(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: not a readable CIFAR batch ({err})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: not a CIFAR batch (a {type(value).__name__}, not a dict)")
    return value


def _cifar_images(batch: dict[str, Any], path: Path) -> np.ndarray:
    data = np.asarray(batch.get("data"))
    if data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path}: 'data' must be (n, 3072) uint8, got {data.shape}")
    return data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()


def load_cifar(root: str | None, fine: bool) -> RawImages:
    """CIFAR-10 (``fine=False``) or CIFAR-100 with its 100 fine labels."""
    name = "cifar-100-python" if fine else "cifar-10-batches-py"
    path = _need(root, f"the folder {name} (or its parent)")
    if (path / name).is_dir():
        path = path / name
    if fine:
        parts = {"train": [path / "train"], "test": [path / "test"]}
        meta, label_key, names_key = path / "meta", "fine_labels", "fine_label_names"
    else:
        parts = {
            "train": [path / f"data_batch_{i}" for i in range(1, 6)],
            "test": [path / "test_batch"],
        }
        meta, label_key, names_key = path / "batches.meta", "labels", "label_names"
    splits = {}
    for split, files in parts.items():
        images, labels = [], []
        for file in files:
            batch = _unpickle(file)
            images.append(_cifar_images(batch, file))
            labels.append(np.asarray(batch.get(label_key), dtype=np.int64).reshape(-1))
        splits[split] = (np.concatenate(images), np.concatenate(labels))
    classes = tuple(str(c) for c in _unpickle(meta).get(names_key, []))
    return RawImages(splits["train"], splits["test"], classes).check(str(path))
