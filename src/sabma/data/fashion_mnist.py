"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` or a folder of idx files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sabma.data.idx import read_idx

DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def _find(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}(.gz) not found in {root}; install the Debian package "
        f"(apt-get update && apt-get install -y dataset-fashion-mnist) or pass a folder holding "
        f"the four idx files"
    )


def load_fashion_mnist(root: str | Path | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (images, labels), "test": (images, labels)}``; images uint8 (n, 28, 28).

    ``root`` is a folder with the four idx files (plain or .gz); by default the Debian package's.
    """
    folder = Path(root) if root is not None else DEBIAN_ROOT
    out = {}
    for split, (image_stem, label_stem) in FILES.items():
        images = read_idx(_find(folder, image_stem))
        labels = read_idx(_find(folder, label_stem))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"Fashion-MNIST {split} files in {folder} disagree: images "
                f"{images.shape}, labels {labels.shape}"
            )
        if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
            raise ValueError(f"Fashion-MNIST {split} labels in {folder} are outside 0..9")
        out[split] = (images, labels.astype(np.int64))
    return out
