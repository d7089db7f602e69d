"""Per-example gradients of 2-d convolutions from the recorded conv2d calls of one pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sabma import GaussianPosterior
from sabma.variance.fisher_gradients import _per_example_vmap
from sabma.variance.layer_gradients import layer_gradients
from tests.variance.test_factor_and_fisher import shifted_statistics

F64 = torch.float64


class _PaddedFirst(nn.Conv2d):
    """Pads in its forward, then convolves without padding (as TensorFlow-"same" layers do): a
    forward hook would see the unpadded input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (0, 1, 0, 1)), self.weight, self.bias, self.stride, 0)


class _Convs(nn.Module):
    """Grouped, strided, dilated, reflect-padded and self-padding convolutions, a BatchNorm and
    a head."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, stride=2, padding=2, dilation=2, groups=2, bias=False)
        self.c = _PaddedFirst(4, 6, 3, stride=2)
        self.d = nn.Conv2d(6, 6, 3, padding=1, padding_mode="reflect", groups=6)
        self.bn = nn.BatchNorm2d(6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.d(self.c(self.b(torch.relu(self.a(x)))))
        return self.head(self.bn(h).mean((2, 3)))


def _posterior(model: nn.Module, subset: str) -> GaussianPosterior:
    posterior = GaussianPosterior(shifted_statistics(model.double()), subset).double()
    posterior.eval()
    return posterior


@pytest.mark.parametrize("channels_last", [False, True])
def test_conv_gradients_equal_vmaps(channels_last: bool) -> None:
    """Every convolution kind above, with its bias or without, in NCHW or channels-last memory:
    the one-pass gradients equal vmap's, column for column."""
    torch.manual_seed(6)
    model = _Convs()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    posterior = _posterior(model, "all")
    x = torch.randn(5, 2, 8, 8, dtype=F64)
    y = torch.tensor([0, 1, 2, 1, 0])
    w = posterior.mean.detach() + 0.1 * torch.randn(posterior.dim, dtype=F64)
    hooks = layer_gradients(posterior, w, x, y)
    assert hooks is not None
    torch.testing.assert_close(hooks, _per_example_vmap(posterior, w, x, y), rtol=0, atol=1e-12)


class _Standardised(nn.Conv2d):
    """Convolves with a function of its weight (weight standardisation), not the weight."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = (self.weight - self.weight.mean()) / (self.weight.std() + 1e-5)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding)


class _Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.head = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(self.conv(x)).mean((2, 3)))


@pytest.mark.parametrize(
    "conv",
    [
        pytest.param(lambda: nn.Conv2d(2, 3, 3, padding="same"), id="padding-same"),
        pytest.param(lambda: _Standardised(2, 3, 3), id="weight-transformed"),
        pytest.param(lambda: nn.Conv1d(2, 3, 3), id="conv1d"),
    ],
)
def test_convolutions_it_cannot_follow_are_declined(conv) -> None:
    """Where the call's weight is not the layer's, its padding is a string, or the layer is not
    2-d: None, and the caller falls back to vmap."""
    layer = conv()
    pool = (2, 3) if isinstance(layer, nn.Conv2d) else (2,)
    posterior = _posterior(_Head(layer, pool), "all")
    shape = (4, 2, 6, 6) if pool == (2, 3) else (4, 2, 6)
    x, y = torch.randn(*shape, dtype=F64), torch.tensor([0, 1, 2, 1])
    assert layer_gradients(posterior, posterior.mean.detach(), x, y) is None


class _Head(nn.Module):
    def __init__(self, layer: nn.Module, pool: tuple[int, ...]) -> None:
        super().__init__()
        self.layer, self.pool, self.head = layer, pool, nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(x).mean(self.pool))


def test_a_convolution_run_twice_is_declined() -> None:
    """One weight in two calls (a shared layer): the hooks cannot tell the calls' shares apart."""
    posterior = _posterior(_Twice(), "all")
    x, y = torch.randn(4, 2, 5, 5, dtype=F64), torch.tensor([0, 1, 2, 1])
    assert layer_gradients(posterior, posterior.mean.detach(), x, y) is None
