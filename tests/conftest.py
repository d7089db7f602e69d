"""Small models and helpers shared by the tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn


class ResidualBlock(nn.Module):
    """A ResNet basic block whose shortcut has its own BatchNorm ("downsample.1")."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride=2, bias=False), nn.BatchNorm2d(c_out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.downsample(x))


class TinyResNet(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU()
        )
        self.layer1 = ResidualBlock(4, 8)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer1(self.stem(x)).mean(dim=(2, 3)))


def mlp(width: int = 8, classes: int = 3, inputs: int = 2) -> nn.Sequential:
    """A small MLP with a LayerNorm."""
    return nn.Sequential(
        nn.Linear(inputs, width), nn.LayerNorm(width), nn.Tanh(), nn.Linear(width, classes)
    )


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


class PicklePayload:
    """Unpickling this runs code: it creates the file ``marker`` (for safe-loading tests)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, ...]]:
        return (os.system, (f"touch {self.marker}",))
