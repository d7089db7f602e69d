"""A tiny CNN with BatchNorm, for tests and quick experiments."""

from __future__ import annotations

from torch import Tensor, nn


class TinyCNN(nn.Module):
    """conv-BN-ReLU ×2 with pooling, global average, dropout (rate 0), linear head ``fc``.

    ``smooth=True``: SiLU and average pooling instead of ReLU and max pooling, so the network
    has no kinks: two runs that differ by float rounding (one process against two) cannot
    part at a unit crossing zero or a tie in a pooling window, and stay as close as rounding
    keeps them."""

    def __init__(self, num_classes: int = 10, width: int = 8, smooth: bool = False) -> None:
        super().__init__()
        activation: type[nn.Module] = nn.SiLU if smooth else nn.ReLU
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            activation(),
            nn.AvgPool2d(2) if smooth else nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            activation(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.dropout = nn.Dropout(0.0)  # off unless a method (MC dropout) sets a rate
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(self.features(x)))
