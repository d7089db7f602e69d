"""Generated data: idx files in the Fashion-MNIST layout, sentiment CSVs, a tiny text encoder."""

from __future__ import annotations

import gzip
import pickle
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


POSITIVE = ("good", "great", "fine", "nice", "fun", "smart")
NEGATIVE = ("bad", "awful", "poor", "dull", "slow", "weak")
FILLER = ("the", "a", "movie", "film", "plot", "actor", "is", "was", "very", "quite", "and")


def write_sentiment_csv(
    path: Path, n: int, seed: int = 0, text_column: str = "review", label_column: str = "mood"
) -> Path:
    """A two-class CSV whose texts carry their label in a few sentiment words, lengths 3–14."""
    import csv

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", text_column, label_column])
        for i in range(n):
            label = ("pos", "neg")[i % 2]
            cue = POSITIVE if label == "pos" else NEGATIVE
            words = list(rng.choice(FILLER, rng.integers(2, 12))) + list(rng.choice(cue, 2))
            rng.shuffle(words)
            writer.writerow([i, " ".join(words) + ".", label])
    return path


def write_tiny_text_encoder(folder: Path, layers: int = 2, hidden: int = 16) -> Path:
    """A randomly initialised BERT encoder with its word-level tokenizer, saved as a Hugging Face
    directory (what ``model.backbone=hf:<folder>`` reads)."""
    import torch
    import transformers

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","]
    vocab = {w: i for i, w in enumerate([*special, *POSITIVE, *NEGATIVE, *FILLER])}
    tokenizer = transformers.BertTokenizer(vocab=vocab)
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def class_images(
    n: int, classes: int, shape: tuple[int, ...], seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class is a bright square at a class-specific place (learnable)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    x = rng.integers(0, 60, (n, *shape), dtype=np.uint8)
    for i, c in enumerate(labels):
        x[i, 2 * c : 2 * c + 3, 1:4] = 250
    return x, labels


def write_fake_cifar(root: Path, fine: bool) -> Path:
    """50 learnable 32×32 images in the released CIFAR-10 (10 classes) or CIFAR-100 (20 of
    its fine classes) python layout under ``root``; returns the data folder."""
    x, y = class_images(50, 10 if not fine else 20, (3, 32, 32))
    data = x.reshape(50, 3072)
    if fine:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        for name in ("train", "test"):
            (folder / name).write_bytes(pickle.dumps({"data": data, "fine_labels": list(y)}))
        (folder / "meta").write_bytes(
            pickle.dumps({"fine_label_names": [f"c{i}" for i in range(20)]})
        )
    else:
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            (folder / name).write_bytes(pickle.dumps({"data": data, "labels": list(y)}))
        (folder / "batches.meta").write_bytes(
            pickle.dumps({"label_names": [f"k{i}" for i in range(10)]})
        )
    return folder
