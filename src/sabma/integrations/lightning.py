"""Lightning with SA-BMA: manual optimisation, both passes in one helper call.

    class Classifier(lightning.pytorch.LightningModule):
        def __init__(self, model, train_loader):
            super().__init__()
            self.model, self.train_loader = model, train_loader
            self.automatic_optimization = False          # SA-BMA runs two passes per step

        def configure_optimizers(self):
            return sabma.SABMA(self.model, data=self.train_loader, lr=1e-3)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return sabma_training_step(self, lambda: F.cross_entropy(self.model(x), y))

Lightning's own closure, precision plugin and hooks run as with any optimiser (``step`` calls
its closure once after the passes); schedulers: call ``self.lr_schedulers().step()`` as manual
optimisation asks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from sabma.step.two_step import TwoStepOptimizer

try:
    import lightning.pytorch as pl
except ImportError as err:  # pragma: no cover - the extra is missing
    raise ImportError(
        "sabma.integrations.lightning needs lightning: pip install 'sabma[lightning]'"
    ) from err


def sabma_training_step(module: pl.LightningModule, loss: Callable[[], Tensor]) -> Tensor:
    """One SA-BMA (or SAM) step in a manual-optimisation ``training_step``: ``loss()`` runs at θ
    and at θ + ε (the same noise) through ``manual_backward``, then the optimiser steps.
    Returns the loss at θ (detached)."""
    wrapped: Any = module.optimizers()
    optimizer = getattr(wrapped, "optimizer", wrapped)
    if not isinstance(optimizer, TwoStepOptimizer):
        raise TypeError(
            f"sabma_training_step needs configure_optimizers to return sabma.SABMA or "
            f"sabma.SAM, got {type(optimizer).__name__}"
        )
    if module.automatic_optimization:
        raise RuntimeError(
            "sabma_training_step runs two passes per step: set self.automatic_optimization = "
            "False in the LightningModule"
        )
    first: Tensor | None = None
    for index in optimizer.passes():
        value = loss()
        module.manual_backward(value)
        if index == 0:
            first = value.detach()
    wrapped.step()
    assert first is not None
    return first
