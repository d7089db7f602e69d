"""Corrupted test sets on disk: generated once, keyed by what determines them, written atomically.

The key is (dataset, corruption, severity, seed, resolution) plus a checksum of the clean images
(which identifies the test subset), so a different split or resolution can never be served a stale
set. The folder is ``$SABMA_CACHE/corruptions`` (default ``~/.cache/sabma/corruptions``).
Users with the released CIFAR-10-C / CIFAR-100-C files can read them with :func:`load_released`.
"""

from __future__ import annotations

import io
import os
import zlib
from pathlib import Path

import numpy as np

from sabma.runs.files import atomic_write_bytes
from sabma.shift.corruptions import (
    check_corruptions,
    check_severities,
    corrupt_images,
    resize_uint8,
)


def default_cache_dir() -> Path:
    root = os.environ.get("SABMA_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "sabma") / "corruptions"


def corrupted_test_set(
    dataset: str,
    clean: np.ndarray,
    name: str,
    severity: int,
    seed: int,
    resolution: int,
    cache_dir: Path | None = None,
) -> np.ndarray:
    """The clean uint8 test images, resized to ``resolution`` and corrupted (uint8, n×r×r×3);
    read from the cache when there, generated and cached otherwise."""
    check_corruptions([name])
    check_severities([severity])
    checksum = zlib.crc32(np.ascontiguousarray(clean).tobytes())
    folder = cache_dir or default_cache_dir()
    path = folder / (
        f"{dataset}-{name}-s{severity}-seed{seed}-r{resolution}-n{len(clean)}-{checksum:08x}.npy"
    )
    if path.is_file():
        try:
            images = np.load(path, allow_pickle=False)
            if images.shape[0] == len(clean) and images.dtype == np.uint8:
                return images
        except (OSError, ValueError):
            pass  # unreadable (e.g. from a foreign writer): generate it again
    images = corrupt_images(resize_uint8(clean, resolution), name, severity, seed)
    buffer = io.BytesIO()
    np.save(buffer, images, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())
    return images


def load_released(folder: Path, name: str, severity: int) -> tuple[np.ndarray, np.ndarray]:
    """Severity ``severity`` of a released CIFAR-10-C / CIFAR-100-C corruption: ``<name>.npy``
    (5·n images, levels 1–5 in order) and ``labels.npy`` from ``folder``."""
    check_severities([severity])
    images_path, labels_path = folder / f"{name}.npy", folder / "labels.npy"
    for path in (images_path, labels_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (expected the released -C layout)")
    try:
        images = np.load(images_path, mmap_mode="r", allow_pickle=False)
        labels = np.load(labels_path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        reason = " ".join(str(err).split())
        raise ValueError(
            f"{folder}: a released -C file is truncated or corrupt ({reason})"
        ) from None
    if images.ndim != 4 or len(images) != len(labels) or len(images) % 5:
        raise ValueError(
            f"{images_path}: expected (5·n, H, W, 3) images matching labels.npy, "
            f"got {images.shape} and {labels.shape}"
        )
    n = len(images) // 5
    part = slice((severity - 1) * n, severity * n)
    return np.asarray(images[part], dtype=np.uint8), np.asarray(labels[part])
