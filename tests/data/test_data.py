"""The idx reader, Fashion-MNIST loading, few-shot splits and preprocessing."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from sabma.data import few_shot_split, load_fashion_mnist, preprocess_images, read_idx
from sabma.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, augment
from tests.data.helpers import idx_bytes, write_fake_fashion_mnist


def test_idx_round_trip_plain_and_gzip(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(array))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(array)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), array)


def test_idx_rejects_truncated_and_corrupt_files(tmp_path: Path) -> None:
    data = idx_bytes(np.zeros((4, 5), dtype=np.uint8))
    (tmp_path / "short").write_bytes(data[:-3])
    (tmp_path / "magic").write_bytes(b"\x01" + data[1:])
    (tmp_path / "bad.gz").write_bytes(gzip.compress(data)[:-10])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_idx(tmp_path / "short")
    with pytest.raises(ValueError, match="bad magic"):
        read_idx(tmp_path / "magic")
    with pytest.raises(ValueError, match="cannot read"):
        read_idx(tmp_path / "bad.gz")


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_from_a_folder(tmp_path: Path, compress: bool) -> None:
    write_fake_fashion_mnist(tmp_path, compress=compress)
    data = load_fashion_mnist(tmp_path)
    assert data["train"][0].shape == (250, 28, 28) and data["test"][1].shape == (80,)
    assert data["train"][1].dtype == np.int64


def test_missing_dataset_names_the_debian_package(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"dataset-fashion-mnist.*|.*apt-get"):
        load_fashion_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_fashion_mnist(tmp_path)


def test_split_is_balanced_disjoint_and_seeded() -> None:
    labels = np.repeat(np.arange(5), 40)
    np.random.default_rng(0).shuffle(labels)
    split = few_shot_split(
        labels, test_size=30, shots=3, val_shots=2, seed=7, test_labels_count=100
    )
    assert np.bincount(labels[split.train]).tolist() == [3] * 5
    assert np.bincount(labels[split.val]).tolist() == [2] * 5
    assert not set(split.train) & set(split.val)
    assert len(split.test) == 30 and len(set(split.test)) == 30 and split.test.max() < 100
    again = few_shot_split(labels, 30, 3, 2, seed=7, test_labels_count=100)
    other = few_shot_split(labels, 30, 3, 2, seed=8, test_labels_count=100)
    assert np.array_equal(split.train, again.train) and np.array_equal(split.test, again.test)
    assert not np.array_equal(split.train, other.train)
    assert len(few_shot_split(labels, 0, 3, 2, 0, 100).test) == 100
    with pytest.raises(ValueError, match="fewer than shots"):
        few_shot_split(labels, 0, 30, 20, 0, 100)


def test_preprocessing_gives_normalised_three_channel_images() -> None:
    grey = np.full((2, 28, 28), 255, dtype=np.uint8)
    out = preprocess_images(grey, 32)
    assert out.shape == (2, 3, 32, 32)
    expected = (1.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(out[0, :, 5, 5], expected)
    rgb = np.zeros((1, 16, 16, 3), dtype=np.uint8)
    assert preprocess_images(rgb, 16).shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="expected images"):
        preprocess_images(np.zeros((2, 28, 28, 2), dtype=np.uint8), 32)


def test_augmentation_shifts_or_flips_without_changing_content_scale() -> None:
    batch = torch.randn(16, 3, 12, 12)
    out = augment(batch, torch.Generator().manual_seed(0))
    assert out.shape == batch.shape and not torch.equal(out, batch)
    # every output is a flipped or shifted view of its own input: the centre survives
    centre = batch[:, :, 4:8, 4:8]
    assert all(any(torch.equal(centre[i], view) for view in _views(out[i])) for i in range(16))


def _views(image: torch.Tensor) -> list[torch.Tensor]:
    views = []
    for img in (image, image.flip(-1)):
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                views.append(img[:, 4 + dy : 8 + dy, 4 + dx : 8 + dx])
    return views
