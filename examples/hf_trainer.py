"""SA-BMA in the Hugging Face ``Trainer``: a BERT-style classifier, its LayerNorms + head Bayesian.

Runs offline as it is: a tiny BERT built from a config (no download) on random token data. For a
real model, replace the model line with
``AutoModelForSequenceClassification.from_pretrained("bert-base-uncased", num_labels=2)`` and the
data with your tokenized datasets.

    pip install 'sabma[hf]' && python examples/hf_trainer.py
"""

from __future__ import annotations

import tempfile

import torch
from transformers import BertConfig, BertForSequenceClassification, TrainingArguments

from sabma.integrations.hf import SABMATrainer


class TokenData(torch.utils.data.Dataset):
    """Random token sequences whose label is whether token 7 occurs (learnable)."""

    def __init__(self, n: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 30, (n, 12), generator=gen)
        self.labels = (self.ids == 7).any(dim=1).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = self.ids[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": self.labels[i]}


def tiny_bert(dropout: float = 0.1) -> BertForSequenceClassification:
    """A 2-layer BERT of width 32, built from its config (no download)."""
    config = BertConfig(
        vocab_size=32,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=16,
        num_labels=2,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    return BertForSequenceClassification(config)


def arguments(
    out: str, epochs: int, batch: int, accumulation: int, **extra: object
) -> TrainingArguments:
    """The Trainer's settings: quiet, on the CPU, nothing saved."""
    return TrainingArguments(
        output_dir=out,
        num_train_epochs=epochs,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,  # spans both passes exactly
        learning_rate=3e-2,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        **extra,  # type: ignore[arg-type]
    )


def main(epochs: int = 2, accumulation: int = 2) -> dict[str, float]:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as out:
        trainer = SABMATrainer(
            model=tiny_bert(),
            args=arguments(out, epochs, batch=8, accumulation=accumulation),
            train_dataset=TokenData(64, seed=1),
            sabma={"rho": 1.0},  # any other SABMA(...) argument goes here too
            bma_samples=8,
        )
        trainer.train()
        result = trainer.predict(TokenData(32, seed=2))
    probs = torch.as_tensor(result.predictions)
    labels = torch.as_tensor(result.label_ids)
    return {
        "nll": float(result.metrics["test_loss"]),
        "acc": float((probs.argmax(1) == labels).float().mean()),
        "rows": float(len(probs)),
    }


if __name__ == "__main__":
    print(main())
