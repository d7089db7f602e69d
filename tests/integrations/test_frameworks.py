"""The framework adapters and their examples train tiny models offline."""

from __future__ import annotations

import importlib.util
import math
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_hf_trainer_example_trains_and_predicts_with_the_bma() -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    result = example("hf_trainer").main(epochs=1)
    assert result["rows"] == 32 and math.isfinite(result["nll"]) and 0 <= result["acc"] <= 1


def test_hf_trainer_accumulation_equals_the_big_batch() -> None:
    """The Trainer's k micro-batches: both passes over all k, the same noise — the posterior
    after an epoch equals the one trained on batches k times larger."""
    pytest.importorskip("accelerate")
    from sabma.integrations.hf import SABMATrainer, unwrapped

    hf = example("hf_trainer")
    data = hf.TokenData(64, seed=1)

    def run(batch: int, accumulation: int):
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as out:
            args = hf.arguments(out, 1, batch, accumulation, lr_scheduler_type="constant")
            trainer = SABMATrainer(model=hf.tiny_bert(dropout=0.0), args=args, train_dataset=data)
            trainer.train()
        return unwrapped(trainer.optimizer).posterior

    big, small = run(16, 1), run(8, 2)
    torch.testing.assert_close(big.mean, small.mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(big.log_std, small.log_std, rtol=1e-5, atol=1e-6)
    a, b = big.factor.detach().double(), small.factor.detach().double()
    scale = float((a @ a.T).abs().max())
    assert scale > 0
    torch.testing.assert_close(a @ a.T, b @ b.T, rtol=0, atol=1e-4 * scale)


def test_lightning_example_trains() -> None:
    pytest.importorskip("lightning")
    result = example("lightning_module").main(epochs=3)
    assert result["rows"] == 32 and result["acc"] > 0.8


def test_lightning_helper_refuses_automatic_optimisation() -> None:
    pl = pytest.importorskip("lightning.pytorch")
    from torch import nn

    import sabma
    from sabma.integrations.lightning import sabma_training_step

    class Auto(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = nn.Linear(2, 2)

        def optimizers(self, use_pl_optimizer: bool = True):  # type: ignore[override]
            return sabma.SAM(self.model.parameters(), lr=0.1)

    with pytest.raises(RuntimeError, match="automatic_optimization = False"):
        sabma_training_step(Auto(), lambda: torch.zeros(()))
