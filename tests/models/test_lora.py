"""LoRA adapters through peft: injection, the ``lora`` subset, and the drop-in optimiser on it."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.functional import cross_entropy
from torch.utils.data import DataLoader, TensorDataset

from sabma import SABMA, select_parameters
from sabma.models.lora import add_lora

pytest.importorskip("peft")


class Attention(nn.Module):
    """Names like a transformer's: query/value get adapters, key and the head do not."""

    def __init__(self) -> None:
        super().__init__()
        self.query, self.key, self.value = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 6)
        self.norm = nn.LayerNorm(6)
        self.classifier = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(torch.tanh(self.query(x)) * torch.sigmoid(self.key(x)) + self.value(x))
        return self.classifier(h)


def test_adapters_start_at_the_pretrained_function_and_form_the_subset() -> None:
    model = Attention()
    x = torch.randn(5, 6)
    before = model(x).detach()
    add_lora(model, rank=2, alpha=4, targets=["query", "value"])
    torch.testing.assert_close(model(x), before)  # B = 0: the network is unchanged
    names = select_parameters(model, "lora")
    assert names == [
        "query.lora_A.default.weight",
        "query.lora_B.default.weight",
        "value.lora_A.default.weight",
        "value.lora_B.default.weight",
        "classifier.weight",
        "classifier.bias",
    ]
    with pytest.raises(ValueError, match="found no LoRA adapters in Attention"):
        select_parameters(Attention(), "lora")
    with pytest.raises(ValueError, match=r"match no module of Attention; its linear layers"):
        add_lora(Attention(), targets=["qkv"])


class _PaddedConv(nn.Conv2d):
    """Like EfficientNet-Lite0's Conv2dStaticSamePadding: a constructor argument of its own."""

    def __init__(self, *args, image_size: int | None = None, **kwargs) -> None:
        assert image_size is not None
        super().__init__(*args, **kwargs)


class _Convolutional(nn.Module):
    def __init__(self, padded: bool) -> None:
        super().__init__()
        conv = _PaddedConv(3, 4, 3, image_size=8) if padded else nn.Conv2d(3, 4, 3)
        self.project, self.depthwise = conv, nn.Conv2d(4, 4, 3, groups=4)
        self.classifier = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.depthwise(self.project(x)).mean(dim=(2, 3)))


@pytest.mark.parametrize(
    ("padded", "targets", "rank", "message"),
    [
        (True, ["project"], 4, r"cannot wrap 'project' \(_PaddedConv, a subclass"),
        (False, ["project", "depthwise"], 2, r"'depthwise' \(Conv2d with groups=4\) needs a rank"),
    ],
)
def test_convolutions_peft_cannot_wrap_are_refused_before_the_model_changes(
    padded: bool, targets: list[str], rank: int, message: str
) -> None:
    model = _Convolutional(padded)
    before = {n: type(m) for n, m in model.named_modules()}
    with pytest.raises(ValueError, match=message):
        add_lora(model, rank=rank, targets=targets)
    assert {n: type(m) for n, m in model.named_modules()} == before  # nothing half-wrapped
    if not padded:  # a rank the groups divide, on plain convolutions: wrapped
        add_lora(model, rank=4, targets=targets)
        assert "project.lora_A.default.weight" in dict(model.named_parameters())
        assert model(torch.randn(2, 3, 8, 8)).shape == (2, 2)


def test_the_drop_in_optimiser_trains_the_adapters() -> None:
    torch.manual_seed(0)
    model = add_lora(Attention(), rank=2, alpha=4)
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    optimizer = SABMA(model, data=loader, subset="lora", lr=0.1)
    assert optimizer.posterior.dim == 4 * 12 + 21
    start = cross_entropy(model(x), y).item()
    for _ in range(5):
        for xb, yb in loader:
            for _ in optimizer.passes():
                cross_entropy(model(xb), yb).backward()
            optimizer.step()
    assert float(model.query.lora_B.default.weight.abs().max()) > 0
    assert cross_entropy(model(x), y).item() < start
    assert not model.key.weight.requires_grad  # the rest stays frozen
