"""Generated data: idx files in the Fashion-MNIST layout, sentiment CSVs, a tiny text encoder."""

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
