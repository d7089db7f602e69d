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

DATASETS = ("fashion_mnist",)


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


def load_task(cfg: DataConfig, seed: int) -> Task:
    """Load ``cfg.dataset``, split it (seeded, class-balanced, disjoint validation), preprocess."""
    if cfg.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {cfg.dataset!r}; choose one of {DATASETS}")
    raw = load_fashion_mnist(cfg.root)
    (train_x, train_y), (test_x, test_y) = raw["train"], raw["test"]
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
        classes=CLASSES,
        x_test_raw=np.asarray(test_x[split.test]),
    )
