"""A few-shot classification task (images or texts), prepared and in memory.

Every dataset goes through the same steps: the source train/test split (:mod:`sabma.data.user`
for images, :mod:`sabma.data.text` for texts), the seeded class-balanced k-shot split with a
disjoint validation split and a fixed random test subset (:func:`few_shot_split`), then the
preparation into model inputs — resized, normalised image tensors, or token tensors from the
backbone's tokenizer. The clean test items are kept raw (uint8 images, strings) with the
``prepare`` function, so corrupted test sets are prepared exactly like the clean one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sabma.config import Config, DataConfig
from sabma.data.fashion_mnist import CLASSES, load_fashion_mnist
from sabma.data.preprocess import preprocess_images
from sabma.data.splits import few_shot_split
from sabma.data.text import RawTexts, load_csv_texts, load_rotten_tomatoes
from sabma.data.user import RawImages, load_cifar, load_image_folder, load_npz
from sabma.models.inputs import Inputs

IMAGE_DATASETS = ("fashion_mnist", "npz", "image_folder", "cifar10", "cifar100")
TEXT_DATASETS = ("rotten_tomatoes", "csv")
DATASETS = IMAGE_DATASETS + TEXT_DATASETS


@dataclass
class TrainData:
    """What training sees of a task: the training and validation splits."""

    x_train: Inputs
    y_train: Tensor
    x_val: Inputs
    y_val: Tensor


@dataclass
class Task:
    x_train: Inputs
    y_train: Tensor
    x_val: Inputs
    y_val: Tensor
    x_test: Inputs
    y_test: Tensor
    classes: tuple[str, ...]
    #: the clean test items before preparation (uint8 images or strings), for shift benchmarks
    x_test_raw: np.ndarray | list[str]
    #: raw items (like ``x_test_raw``) → model inputs, as the splits were prepared
    prepare: Callable[[Any], Inputs]
    kind: str = "image"  # "image" | "text"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def train_data(self) -> TrainData:
        return TrainData(self.x_train, self.y_train, self.x_val, self.y_val)


def dataset_kind(dataset: str) -> str:
    """ "image" or "text" (ValueError for an unknown dataset)."""
    if dataset in IMAGE_DATASETS:
        return "image"
    if dataset in TEXT_DATASETS:
        return "text"
    raise ValueError(f"unknown dataset {dataset!r}; choose one of {DATASETS}")


def load_raw_images(cfg: DataConfig) -> RawImages:
    """The train and test images of ``cfg.dataset`` (see :mod:`sabma.data.user`)."""
    if cfg.dataset == "fashion_mnist":
        fmnist = load_fashion_mnist(cfg.root)
        return RawImages(fmnist["train"], fmnist["test"], CLASSES)
    if cfg.dataset == "npz":
        return load_npz(cfg.root)
    if cfg.dataset == "image_folder":
        # one held-out test split for every seed
        return load_image_folder(cfg.root, seed=0, test_fraction=cfg.test_fraction)
    if cfg.dataset in ("cifar10", "cifar100"):
        return load_cifar(cfg.root, fine=cfg.dataset == "cifar100")
    raise ValueError(f"unknown image dataset {cfg.dataset!r}; choose one of {IMAGE_DATASETS}")


def load_raw_texts(cfg: DataConfig) -> RawTexts:
    """The train and test texts of ``cfg.dataset`` (see :mod:`sabma.data.text`)."""
    if cfg.dataset == "rotten_tomatoes":
        return load_rotten_tomatoes(cfg.test_fraction)
    if cfg.dataset == "csv":
        if not cfg.root:
            raise ValueError("dataset 'csv' needs data.root: the training CSV file")
        return load_csv_texts(
            cfg.root, cfg.test_file, cfg.text_column, cfg.label_column, cfg.test_fraction
        )
    raise ValueError(f"unknown text dataset {cfg.dataset!r}; choose one of {TEXT_DATASETS}")


def check_backbone_kind(cfg: Config) -> str:
    """The kind of ``cfg.data.dataset`` ("image" or "text"); a backbone of the other kind is
    refused."""
    from sabma.models.text import is_text_backbone

    dataset, backbone = cfg.data.dataset, cfg.model.backbone
    kind = dataset_kind(dataset)
    if kind == "text" and not is_text_backbone(backbone):
        raise ValueError(
            f"dataset {dataset!r} holds texts: model.backbone must be a text encoder "
            f"('minilm' or 'hf:<dir>'), got {backbone!r}"
        )
    if kind == "image" and is_text_backbone(backbone):
        raise ValueError(
            f"backbone {backbone!r} reads texts: data.dataset must be one of the text datasets "
            f"({', '.join(TEXT_DATASETS)}), got {dataset!r}"
        )
    return kind


def _text_preparation(cfg: Config) -> Callable[[Any], Inputs]:
    from sabma.models.text import load_tokenizer, tokenize

    return partial(
        tokenize,
        load_tokenizer(cfg.model.backbone, cfg.model.pretrained),
        max_tokens=cfg.data.max_tokens,
    )


def load_task(cfg: Config, seed: int) -> Task:
    """Load ``cfg.data.dataset``, split it (seeded, class-balanced, disjoint validation) and
    prepare it for ``cfg.model.backbone``."""
    data = cfg.data
    kind = check_backbone_kind(cfg)
    raw: RawImages | RawTexts
    if kind == "text":
        raw = load_raw_texts(data)
        prepare = _text_preparation(cfg)
    else:
        raw = load_raw_images(data)
        prepare = partial(preprocess_images, resolution=data.resolution)
    if data.classes:
        raw = keep_classes(raw, data.classes)
    (train_x, train_y), (test_x, test_y) = raw.train, raw.test
    split = few_shot_split(train_y, data.test_size, data.shots, data.val_shots, seed, len(test_y))
    test_raw = _pick(test_x, split.test)
    return Task(
        x_train=prepare(_pick(train_x, split.train)),
        y_train=torch.as_tensor(train_y[split.train]),
        x_val=prepare(_pick(train_x, split.val)),
        y_val=torch.as_tensor(train_y[split.val]),
        x_test=prepare(test_raw),
        y_test=torch.as_tensor(test_y[split.test]),
        classes=raw.classes,
        x_test_raw=test_raw,
        prepare=prepare,
        kind=kind,
    )


def check_classes(chosen: Sequence[int], classes: Sequence[str]) -> None:
    """Refuse a ``data.classes`` that is not a set of at least 2 of the dataset's class indices."""
    bad = [c for c in chosen if not isinstance(c, int) or not 0 <= c < len(classes)]
    if bad:
        raise ValueError(
            f"data.classes: {bad} are not class indices of this dataset (0..{len(classes) - 1})"
        )
    if len(set(chosen)) != len(chosen) or len(chosen) < 2:
        raise ValueError(f"data.classes must name at least 2 distinct classes, got {list(chosen)}")


def keep_classes(raw: RawImages | RawTexts, chosen: Sequence[int]) -> Any:
    """Only the items of the ``chosen`` classes, relabelled 0..k−1 in the order given."""
    check_classes(chosen, raw.classes)
    relabel = np.full(len(raw.classes), -1, dtype=np.int64)
    relabel[list(chosen)] = np.arange(len(chosen))

    def split(items: Any, labels: np.ndarray) -> tuple[Any, np.ndarray]:
        keep = np.flatnonzero(relabel[labels] >= 0)
        return _pick(items, keep), relabel[labels[keep]]

    return type(raw)(split(*raw.train), split(*raw.test), tuple(raw.classes[c] for c in chosen))


def other_classes_test(raw: RawImages | RawTexts, chosen: Sequence[int]) -> Any:
    """The test items of the classes not in ``chosen`` (the near out-of-distribution set)."""
    check_classes(chosen, raw.classes)
    items, labels = raw.test
    return _pick(items, np.flatnonzero(~np.isin(labels, list(chosen))))


def _pick(items: np.ndarray | Sequence[str], index: np.ndarray) -> Any:
    if isinstance(items, np.ndarray):
        return np.asarray(items[index])
    return [items[i] for i in index]
