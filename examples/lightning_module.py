"""SA-BMA in Lightning: manual optimisation, both passes in ``sabma_training_step``.

Runs offline as it is (a small MLP with LayerNorm on synthetic data); put your own network in
``model`` and your loaders in ``fit``.

    pip install 'sabma[lightning]' && python examples/lightning_module.py
"""

from __future__ import annotations

import tempfile

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import sabma
from sabma.integrations.lightning import sabma_training_step


class Classifier(pl.LightningModule):
    def __init__(self, model: nn.Module, train_loader: DataLoader) -> None:
        super().__init__()
        self.model, self.train_loader = model, train_loader
        self.automatic_optimization = False  # SA-BMA runs two passes per step

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return sabma.SABMA(self.model, data=self.train_loader, lr=0.05)

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        return sabma_training_step(self, lambda: F.cross_entropy(self.model(x), y))


def main(epochs: int = 3) -> dict[str, float]:
    torch.manual_seed(0)
    x = torch.randn(96, 4)
    y = (x[:, 0] + x[:, 1] > 0).long()
    train = DataLoader(TensorDataset(x[:64], y[:64]), batch_size=16, shuffle=True)
    test = DataLoader(TensorDataset(x[64:], y[64:]), batch_size=16)
    model = nn.Sequential(nn.Linear(4, 16), nn.LayerNorm(16), nn.Tanh(), nn.Linear(16, 2))
    module = Classifier(model, train)
    with tempfile.TemporaryDirectory() as out:
        trainer = pl.Trainer(
            max_epochs=epochs,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=out,
        )
        trainer.fit(module, train)
    probs = sabma.bma(module.optimizers().optimizer, test, samples=10)
    return {"acc": float((probs.argmax(1) == y[64:]).float().mean()), "rows": float(len(probs))}


if __name__ == "__main__":
    print(main())
