"""The user's own images: .npz, image folders, CIFAR-10/100 — read, checked, split, trained on."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sabma.config import config_from_dict
from sabma.data.tasks import load_task
from sabma.data.user import load_cifar, load_image_folder, load_npz
from sabma.pipeline.train import train_run
from tests.conftest import PicklePayload
from tests.data.helpers import class_images, write_fake_cifar


def _npz(path: Path, shape: tuple[int, ...] = (12, 12), **extra: np.ndarray) -> Path:
    x_train, y_train = class_images(60, 3, shape)
    x_test, y_test = class_images(30, 3, shape, seed=1)
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test, **extra}
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("shape", [(12, 12), (12, 12, 3), (12, 12, 1)])
def test_npz_images_become_a_few_shot_task(tmp_path: Path, shape: tuple[int, ...]) -> None:
    path = _npz(tmp_path / "d.npz", shape, classes=np.array(["cat", "dog", "eel"]))
    cfg = config_from_dict(
        {},
        [
            "data.dataset=npz",
            f"data.root={path}",
            "data.shots=4",
            "data.val_shots=2",
            "data.test_size=0",
            "data.resolution=16",
        ],
    )
    task = load_task(cfg, seed=0)
    assert task.classes == ("cat", "dog", "eel")
    assert task.x_train.shape == (12, 3, 16, 16) and task.x_val.shape == (6, 3, 16, 16)
    assert task.x_test.shape == (30, 3, 16, 16) and task.x_test_raw.dtype == np.uint8
    assert sorted(np.bincount(task.y_train.numpy())) == [4, 4, 4]


def test_npz_problems_are_one_line(tmp_path: Path) -> None:
    path = _npz(tmp_path / "d.npz")
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"not a readable \.npz file"):
        load_npz(str(path))
    x, y = class_images(10, 2, (8, 8))
    np.savez(tmp_path / "m.npz", x_train=x, y_train=y)
    with pytest.raises(ValueError, match=r"missing arrays \['x_test', 'y_test'\]"):
        load_npz(str(tmp_path / "m.npz"))
    np.savez(tmp_path / "f.npz", x_train=x / 255.0, y_train=y, x_test=x, y_test=y)
    with pytest.raises(ValueError, match="train images must be uint8"):
        load_npz(str(tmp_path / "f.npz"))
    np.savez(
        tmp_path / "l.npz",
        x_train=x,
        y_train=y + 5,
        x_test=x,
        y_test=y,
        classes=np.array(["a", "b"]),
    )
    with pytest.raises(
        ValueError, match=r"train labels must lie in 0\.\.1 \(2 classes\), found 5\.\.6"
    ):
        load_npz(str(tmp_path / "l.npz"))


def _png_tree(root: Path, per_class: int = 6, grey: bool = False) -> None:
    x, y = class_images(3 * per_class, 3, (10, 10) if grey else (10, 10, 3))
    for i, (image, label) in enumerate(zip(x, y, strict=True)):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray(image)
        if i == 0:
            picture = picture.resize((14, 14))  # a different size: resized to the first's
        picture.save(folder / f"{i}.png")


def test_image_folder_with_and_without_train_test(tmp_path: Path) -> None:
    _png_tree(tmp_path / "flat")
    raw = load_image_folder(str(tmp_path / "flat"), seed=0)
    assert raw.classes == ("class_0", "class_1", "class_2")
    assert len(raw.train[0]) + len(raw.test[0]) == 18 and len(raw.test[0]) == 3  # 20 % per class
    assert raw.train[0].shape[1:] == (14, 14, 3)  # the first image's size
    assert np.array_equal(load_image_folder(str(tmp_path / "flat"), seed=0).test[1], raw.test[1])
    _png_tree(tmp_path / "split" / "train", grey=True)
    _png_tree(tmp_path / "split" / "test", per_class=2, grey=True)
    raw = load_image_folder(str(tmp_path / "split"), seed=0)
    assert raw.train[0].ndim == 3 and len(raw.test[0]) == 6  # grey kept grey
    (tmp_path / "split" / "train" / "class_0" / "0.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"0\.png: not a readable image"):
        load_image_folder(str(tmp_path / "split"), seed=0)


@pytest.mark.parametrize("fine", [False, True])
def test_cifar_python_layout(tmp_path: Path, fine: bool) -> None:
    folder = write_fake_cifar(tmp_path, fine)
    raw = load_cifar(str(tmp_path), fine)  # the parent folder works too
    assert raw.train[0].shape == ((50 if fine else 250), 32, 32, 3)
    assert len(raw.classes) == (20 if fine else 10)
    raw2 = load_cifar(str(folder), fine)
    assert np.array_equal(raw2.test[1], raw.test[1])


def test_a_crafted_cifar_pickle_does_not_run(tmp_path: Path) -> None:
    folder = write_fake_cifar(tmp_path, fine=False)
    marker = tmp_path / "pwned"
    (folder / "test_batch").write_bytes(pickle.dumps({"data": PicklePayload(marker)}))
    with pytest.raises(ValueError, match="refused to load"):
        load_cifar(str(folder), fine=False)
    assert not marker.exists()


def test_a_run_on_npz_data(tmp_path: Path) -> None:
    path = _npz(tmp_path / "d.npz")
    cfg = config_from_dict(
        {},
        [
            "data.dataset=npz",
            f"data.root={path}",
            "model.backbone=tiny_cnn",
            "data.shots=5",
            "data.val_shots=2",
            "data.resolution=16",
            "optim.epochs=3",
            "optim.batch_size=5",
            "eval.samples=4",
            "eval.val_samples=2",
            "method.sabma.rank=1",
        ],
    )
    metrics = train_run(cfg, tmp_path / "run", progress=False)
    assert metrics["dataset"] == "npz" and set(metrics["test"]["bma"]) >= {"acc", "nll"}


def test_labels_and_classes_are_checked(tmp_path: Path) -> None:
    """A stray label, a class gap, float labels, test classes training lacks: one line each."""
    x, y = class_images(60, 10, (8, 8))
    stray_x = np.concatenate([x, x[:10]])
    stray_y = np.concatenate([y, np.full(10, 99)])
    np.savez(tmp_path / "stray.npz", x_train=stray_x, y_train=stray_y, x_test=x, y_test=y)
    with pytest.raises(
        ValueError,
        match=r"classes without training examples: 10, 11, .* \(89 in all\); present above the "
        r"gap: 99 \(10 examples\) — stray labels\?",
    ):
        load_npz(str(tmp_path / "stray.npz"))
    gap = np.where(y == 2, 3, y)  # no example of class 2
    np.savez(tmp_path / "gap.npz", x_train=x, y_train=gap, x_test=x, y_test=gap)
    with pytest.raises(ValueError, match=r"classes without training examples: 2; present above"):
        load_npz(str(tmp_path / "gap.npz"))
    np.savez(tmp_path / "float.npz", x_train=x, y_train=y.astype(np.float32), x_test=x, y_test=y)
    raw = load_npz(str(tmp_path / "float.npz"))  # whole-number floats are class indices
    assert raw.classes == tuple(str(i) for i in range(10)) and raw.train[1].dtype == np.int64
    half = y.astype(np.float32) + 0.5
    np.savez(tmp_path / "half.npz", x_train=x, y_train=half, x_test=x, y_test=y)
    with pytest.raises(ValueError, match=r"y_train must be whole class indices, found 0\.5"):
        load_npz(str(tmp_path / "half.npz"))
    _png_tree(tmp_path / "tree" / "train")
    _png_tree(tmp_path / "tree" / "test", per_class=2)
    (tmp_path / "tree" / "test" / "class_0").rename(tmp_path / "tree" / "test" / "klass_0")
    with pytest.raises(ValueError, match=r"class folders that training does not have: klass_0"):
        load_image_folder(str(tmp_path / "tree"), seed=0)
    _png_tree(tmp_path / "empty")
    (tmp_path / "empty" / "class_3").mkdir()
    with pytest.raises(ValueError, match=r"classes without training examples: class_3"):
        load_image_folder(str(tmp_path / "empty"), seed=0)
