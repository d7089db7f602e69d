"""Generated idx files in the Fashion-MNIST layout."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def write_fake_fashion_mnist(
    root: Path,
    per_class_train: int = 25,
    per_class_test: int = 8,
    compress: bool = True,
    seed: int = 0,
) -> None:
    """Ten classes whose images differ by a class-specific bright square (learnable)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, per_class in (("train", per_class_train), ("t10k", per_class_test)):
        labels = np.repeat(np.arange(10), per_class)
        rng.shuffle(labels)
        images = rng.integers(0, 60, size=(len(labels), 28, 28))
        for i, c in enumerate(labels):
            r, q = divmod(int(c), 4)
            images[i, 2 + 8 * r : 8 + 8 * r, 2 + 7 * q : 7 + 7 * q] = 250
        for kind, data in (("images-idx3", images), ("labels-idx1", labels)):
            payload = idx_bytes(np.asarray(data))
            name = f"{split}-{kind}-ubyte"
            if compress:
                (root / f"{name}.gz").write_bytes(gzip.compress(payload))
            else:
                (root / name).write_bytes(payload)
