"""LoRA adapters through ``peft``, as-is: the adapters (+ the new head) carry the posterior
(``subset="lora"``, Laplace-LoRA / BLoB / IVON-LoRA style Bayesian fine-tuning).

:func:`add_lora` injects LoRA layers into a network in place with ``peft.inject_adapter_in_model``
(parameter names keep the network's structure: ``….query.lora_A.default.weight``; the head keeps
its name). B starts at 0 and A at peft's random initialisation, so the network starts as the
pre-trained one. ``subset="lora"`` then selects every LoRA layer's ``lora_A``/``lora_B`` tensors
(by peft's module type, never by name) and the head.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def add_lora(
    model: nn.Module,
    rank: int = 8,
    alpha: int = 16,
    targets: Sequence[str] = ("query", "value"),
    dropout: float = 0.0,
) -> nn.Module:
    """Inject rank-``rank`` LoRA adapters (scaling ``alpha``/``rank``) into the modules whose
    names end with one of ``targets``; returns the model (changed in place)."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise ValueError("subset 'lora' needs peft (pip install 'sabma[lora]')") from None
    if not isinstance(rank, int) or rank < 1 or not alpha > 0 or not 0 <= dropout < 1:
        raise ValueError(
            f"LoRA needs rank >= 1, alpha > 0 and dropout in [0, 1), got {rank}, {alpha}, {dropout}"
        )
    targets = list(targets)
    names = [n for n, _ in model.named_modules() if n]
    if not targets or not any(n.split(".")[-1] in targets or n in targets for n in names):
        linear = sorted(
            {n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
        )
        raise ValueError(
            f"the LoRA targets {targets} match no module of {type(model).__name__}; its linear "
            f"layers are named {linear[:12]}"
        )
    _check_convolutions(model, targets, rank)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=dropout)
    return inject_adapter_in_model(config, model)


_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _check_convolutions(model: nn.Module, targets: list[str], rank: int) -> None:
    """Refuse, before the model is touched, the convolutions peft cannot wrap: peft builds a
    convolution's B by calling the layer's own class, which a subclass with constructor
    arguments of its own refuses halfway (EfficientNet-Lite0's ``Conv2dStaticSamePadding``
    asserts an image size), and it needs the rank to be a multiple of a grouped convolution's
    groups."""
    for name, module in model.named_modules():
        if not name or not (name.split(".")[-1] in targets or name in targets):
            continue
        if not isinstance(module, _CONVOLUTIONS):
            continue
        kind = type(module).__name__
        if type(module) not in _CONVOLUTIONS:
            raise ValueError(
                f"LoRA cannot wrap {name!r} ({kind}, a subclass of a torch convolution with a "
                "constructor of its own, which peft calls to build the adapter); target plain "
                "nn.Linear or nn.Conv layers"
            )
        if module.groups > 1 and rank % module.groups:
            raise ValueError(
                f"LoRA on {name!r} ({kind} with groups={module.groups}) needs a rank divisible "
                f"by {module.groups}, got {rank}; choose another rank or leave it out of targets"
            )
