"""Backbones from model zoos — ``torchvision:<name>``, ``timm:<name>`` — with their pre-trained
weights loaded the way each zoo loads them (its own download and cache) when asked for.

* ``weights`` given (a local file): torchvision loads it as a state dict; timm through its own
  ``pretrained_cfg_overlay=dict(file=…)`` (timm adapts the classifier and input layer itself).
* ``pretrained=True`` without a file: torchvision's ``weights="DEFAULT"`` (cached under
  ``torch.hub.get_dir()``), timm's ``pretrained=True`` (the Hugging Face hub cache). On a machine
  that cannot reach them this fails in one line that names ``model.weights`` and the cache.
* neither: the architecture with random weights (a warning says so): tests, and training from
  scratch.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

from torch import nn

log = logging.getLogger(__name__)

ZOO_PREFIXES = ("torchvision:", "timm:")


def torchvision_model(name: str, weights: str | None, pretrained: bool) -> nn.Module:
    """torchvision's ``name`` with its original head (the caller replaces it)."""
    try:
        import torchvision
    except ImportError:
        raise ValueError(
            "torchvision backbones need torchvision (pip install 'sabma[vision]')"
        ) from None
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(
            f"unknown torchvision classification model {name!r} "
            f"(torchvision.models.list_models() lists them)"
        )
    if weights or not pretrained:
        if not weights:
            _random_warning(f"torchvision:{name}")
        return torchvision.models.get_model(name, weights=None)
    import torch

    return _downloading(
        f"torchvision:{name}",
        str(Path(torch.hub.get_dir()) / "checkpoints"),
        lambda: torchvision.models.get_model(name, weights="DEFAULT", progress=False),
    )


def timm_model(name: str, num_classes: int, weights: str | None, pretrained: bool) -> nn.Module:
    """timm's ``name`` with a new ``num_classes`` head (timm's own ``reset_classifier``)."""
    try:
        import timm
    except ImportError:
        raise ValueError("timm backbones need timm (pip install 'sabma[vision]')") from None
    if not timm.list_models(name):
        raise ValueError(f"unknown timm model {name!r} (timm.list_models() lists them)")
    if weights:
        if not Path(weights).is_file():
            raise FileNotFoundError(f"weights file {weights} does not exist")
        overlay: dict[str, Any] = {"file": str(weights)}
        return timm.create_model(
            name, pretrained=True, pretrained_cfg_overlay=overlay, num_classes=num_classes
        )
    if not pretrained:
        _random_warning(f"timm:{name}")
        return timm.create_model(name, pretrained=False, num_classes=num_classes)
    from huggingface_hub.constants import HF_HUB_CACHE

    return _downloading(
        f"timm:{name}",
        HF_HUB_CACHE,
        lambda: timm.create_model(name, pretrained=True, num_classes=num_classes),
    )


@contextmanager
def quiet_hub() -> Iterator[None]:
    """The Hugging Face hub's retry warnings silenced (an offline attempt logs two dozen lines
    before it fails; the failure itself becomes one line)."""
    hub = logging.getLogger("huggingface_hub")
    level = hub.level
    hub.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub.setLevel(level)


def _downloading(label: str, cache: str, build: Any) -> nn.Module:
    """``build()``, which fetches weights; what the zoo prints meanwhile (torch.hub's
    "Downloading: …" on stdout) is passed on after a success and dropped after a failure, which
    is one line."""
    printed = io.StringIO()
    try:
        with quiet_hub(), redirect_stdout(printed), redirect_stderr(printed):
            model: nn.Module = build()
        sys.stderr.write(printed.getvalue())
        return model
    except (OSError, RuntimeError, ValueError) as err:  # URLError, hub errors are OSErrors
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise ValueError(
            f"could not fetch the pre-trained weights of {label} ({reason}); offline, set "
            f"model.weights=FILE (a local weights file) or put the zoo's file in its cache "
            f"{cache}"
        ) from None


def _random_warning(label: str) -> None:
    log.warning(
        "%s: random initial weights (model.pretrained=true loads the zoo's pre-trained ones, "
        "model.weights=FILE a local file)",
        label,
    )
