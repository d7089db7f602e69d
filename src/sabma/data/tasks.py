"""A few-shot classification task, preprocessed and in memory."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sabma.config import DataConfig
from sabma.data.fashion_mnist import CLASSES, load_fashion_mnist
from sabma.data.preprocess import preprocess_images
from sabma.data.splits import few_shot_split
from sabma.data.user import RawImages, load_cifar, load_image_folder, load_npz

DATASETS = ("fashion_mnist", "npz", "image_folder", "cifar10", "cifar100")


@dataclass
class Task:
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    classes: tuple[str, ...]
    #: the clean test images before preprocessing (uint8), for corruption benchmarks
    x_test_raw: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def load_raw_images(cfg: DataConfig) -> RawImages:
    """The train and test images of ``cfg.dataset`` (see :mod:`sabma.data.user`)."""
    if cfg.dataset == "fashion_mnist":
        fmnist = load_fashion_mnist(cfg.root)
        return RawImages(fmnist["train"], fmnist["test"], CLASSES)
    if cfg.dataset == "npz":
        return load_npz(cfg.root)
    if cfg.dataset == "image_folder":
        return load_image_folder(cfg.root, seed=0)  # one held-out test split for every seed
    if cfg.dataset in ("cifar10", "cifar100"):
        return load_cifar(cfg.root, fine=cfg.dataset == "cifar100")
    raise ValueError(f"unknown dataset {cfg.dataset!r}; choose one of {DATASETS}")


def load_task(cfg: DataConfig, seed: int) -> Task:
    """Load ``cfg.dataset``, split it (seeded, class-balanced, disjoint validation), preprocess."""
    raw = load_raw_images(cfg)
    (train_x, train_y), (test_x, test_y) = raw.train, raw.test
    split = few_shot_split(train_y, cfg.test_size, cfg.shots, cfg.val_shots, seed, len(test_y))

    def prep(images: object, idx: object) -> Tensor:
        return preprocess_images(images[idx], cfg.resolution)  # type: ignore[index]

    return Task(
        x_train=prep(train_x, split.train),
        y_train=torch.as_tensor(train_y[split.train]),
        x_val=prep(train_x, split.val),
        y_val=torch.as_tensor(train_y[split.val]),
        x_test=prep(test_x, split.test),
        y_test=torch.as_tensor(test_y[split.test]),
        classes=raw.classes,
        x_test_raw=np.asarray(test_x[split.test]),
    )
