"""Two image datasets built from what installs offline, in the ``.npz`` layout of ``sabma``'s
user data (``x_train, y_train, x_test, y_test, classes``), for checking defaults on data nobody
tuned them on (docs/results.md):

* ``digits.npz`` — scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes),
  scaled to uint8; a seeded, class-balanced 20 % test split.
* ``patches.npz`` — 48×48 patches of ten of scikit-image's bundled photographs and textures
  (brick, grass, gravel, moon, cell, coins, camera, chelsea, coffee, astronaut): the class is
  the source image. Each patch is a random square of 48–160 px, resized, randomly flipped;
  training patches come from the left 65 % of each image, test patches from the right 30 %
  (a gap between them), so no test pixel was ever seen in training.

    python -m benchmarks.make_datasets OUT_DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

PATCH_SOURCES = (
    "brick",
    "grass",
    "gravel",
    "moon",
    "cell",
    "coins",
    "camera",
    "chelsea",
    "coffee",
    "astronaut",
)
PATCH = 48


def digits(seed: int = 0) -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)
    labels = data.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        test[members[: len(members) // 5]] = True
    return {
        "x_train": images[~test],
        "y_train": labels[~test],
        "x_test": images[test],
        "y_test": labels[test],
        "classes": np.array([str(c) for c in range(10)]),
    }


def _patches(image: np.ndarray, count: int, lo: float, hi: float, rng: np.random.Generator):
    from skimage.transform import resize

    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    image = image[..., :3]
    h, w = image.shape[:2]
    x0, x1 = int(lo * w), int(hi * w)
    out = np.empty((count, PATCH, PATCH, 3), dtype=np.uint8)
    for i in range(count):
        size = int(rng.integers(PATCH, min(160, h, x1 - x0) + 1))
        top = int(rng.integers(0, h - size + 1))
        left = int(rng.integers(x0, x1 - size + 1))
        crop = image[top : top + size, left : left + size]
        patch = resize(crop, (PATCH, PATCH), anti_aliasing=True, preserve_range=True)
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        out[i] = np.clip(np.round(patch), 0, 255).astype(np.uint8)
    return out


def patches(per_class_train: int = 60, per_class_test: int = 100, seed: int = 0):
    import skimage.data

    rng = np.random.default_rng(seed)
    xs_train, xs_test, ys_train, ys_test = [], [], [], []
    for label, name in enumerate(PATCH_SOURCES):
        image = getattr(skimage.data, name)()
        xs_train.append(_patches(image, per_class_train, 0.0, 0.65, rng))
        xs_test.append(_patches(image, per_class_test, 0.70, 1.0, rng))
        ys_train.append(np.full(per_class_train, label))
        ys_test.append(np.full(per_class_test, label))
    return {
        "x_train": np.concatenate(xs_train),
        "y_train": np.concatenate(ys_train).astype(np.int64),
        "x_test": np.concatenate(xs_test),
        "y_test": np.concatenate(ys_test).astype(np.int64),
        "classes": np.array(PATCH_SOURCES),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, build in (("digits", digits), ("patches", patches)):
        arrays = build()
        np.savez_compressed(args.out / f"{name}.npz", **arrays)
        print(
            f"{name}: {len(arrays['y_train'])} train / {len(arrays['y_test'])} test, "
            f"{len(arrays['classes'])} classes, images {arrays['x_train'].shape[1:]}"
        )


if __name__ == "__main__":
    main()
