"""Every corruption at every severity on small grey and RGB images; the cache; released files."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from sabma.shift.cache import corrupted_test_set, load_released
from sabma.shift.corruptions import (
    ALL_CORRUPTIONS,
    NOT_MONOTONE,
    SEVERITIES,
    corrupt_images,
    resize_uint8,
)


def clean_images(grey: bool, size: int, n: int = 12) -> np.ndarray:
    """Bright textured shapes with sharp edges on a dark background (like Fashion-MNIST)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = []
    for _ in range(n):
        cy, cx, r = rng.uniform(0.3, 0.7, 3) * np.array([1, 1, 0.6])
        shape = (np.abs(yy - cy) + np.abs(xx - cx) < r).astype(float)
        texture = 0.75 + 0.25 * np.sin(2 * np.pi * rng.uniform(3, 6) * (xx + yy))
        channels = [shape * texture * rng.uniform(0.6, 1.0) for _ in range(1 if grey else 3)]
        images.append(np.stack(channels, -1))
    out = (np.stack(images) * 255).astype(np.uint8)
    return out[..., 0] if grey else out


@pytest.mark.parametrize(("grey", "size"), [(True, 28), (False, 32)])
@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_every_corruption_runs_and_departs_further_as_severity_rises(
    name: str, grey: bool, size: int
) -> None:
    clean = clean_images(grey, size)
    reference = np.repeat(clean[..., None], 3, -1) if grey else clean
    distances = []
    for severity in SEVERITIES:
        out = corrupt_images(clean, name, severity, seed=1)
        assert out.dtype == np.uint8 and out.shape == (len(clean), size, size, 3)
        distances.append(np.abs(out.astype(float) - reference).mean())
    assert distances[-1] > 0
    if name not in NOT_MONOTONE:
        assert all(b > a for a, b in itertools.pairwise(distances)), distances


def test_corruption_is_seeded_and_leaves_numpy_state_alone() -> None:
    clean = clean_images(True, 28, n=3)
    np.random.seed(123)  # noqa: NPY002 (the global stream is what must stay untouched)
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    a = corrupt_images(clean, "gaussian_noise", 3, seed=0)
    assert np.array_equal(np.random.get_state()[1], before)  # noqa: NPY002
    assert np.array_equal(a, corrupt_images(clean, "gaussian_noise", 3, seed=0))
    assert not np.array_equal(a, corrupt_images(clean, "gaussian_noise", 3, seed=1))


def test_bad_arguments_are_clear_errors() -> None:
    clean = clean_images(True, 28, n=1)
    with pytest.raises(ValueError, match=r"unknown corruption\(s\) \['rain'\]; choose from"):
        corrupt_images(clean, "rain", 1)
    with pytest.raises(ValueError, match="severities must be integers from 1 to 5"):
        corrupt_images(clean, "fog", 6)
    with pytest.raises(ValueError, match="images must be uint8"):
        corrupt_images(clean.astype(float), "fog", 1)


def test_cache_is_keyed_and_reused(tmp_path: Path) -> None:
    clean = clean_images(True, 28, n=4)
    first = corrupted_test_set("fmnist", clean, "shot_noise", 2, 0, 32, tmp_path)
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1 and "shot_noise-s2-seed0-r32-n4" in files[0].name
    assert first.shape == (4, 32, 32, 3)
    np.save(files[0], np.zeros_like(first))  # a cached file is what gets served
    assert not corrupted_test_set("fmnist", clean, "shot_noise", 2, 0, 32, tmp_path).any()
    corrupted_test_set("fmnist", clean[:3], "shot_noise", 2, 0, 32, tmp_path)  # another subset
    corrupted_test_set("fmnist", clean, "shot_noise", 2, 0, 64, tmp_path)  # another resolution
    assert len(list(tmp_path.glob("*.npy"))) == 3
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_resize_matches_the_shape_and_keeps_uint8() -> None:
    out = resize_uint8(clean_images(True, 28, n=2), 64)
    assert out.shape == (2, 64, 64) and out.dtype == np.uint8


def test_released_c_files_are_read_by_severity(tmp_path: Path) -> None:
    images = np.arange(5 * 2 * 4 * 4 * 3, dtype=np.uint8).reshape(10, 4, 4, 3)
    np.save(tmp_path / "fog.npy", images)
    np.save(tmp_path / "labels.npy", np.arange(10) % 3)
    x, y = load_released(tmp_path, "fog", 3)
    assert np.array_equal(x, images[4:6]) and np.array_equal(y, [1, 2])
    with pytest.raises(FileNotFoundError, match=r"snow\.npy not found"):
        load_released(tmp_path, "snow", 1)
    data = (tmp_path / "fog.npy").read_bytes()
    (tmp_path / "fog.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="a released -C file is truncated or corrupt"):
        load_released(tmp_path, "fog", 1)
