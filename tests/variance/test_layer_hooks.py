"""What the hooked pass follows, and what it hands to vmap: networks whose per-example
gradients the layer formulas would get wrong are declined, and those they get right are exact."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sabma import GaussianPosterior
from sabma.variance.fisher_gradients import _per_example_vmap
from sabma.variance.layer_gradients import layer_gradients
from tests.variance.test_factor_and_fisher import shifted_statistics

F64 = torch.float64


def _hooks_and_vmap(model: nn.Module, shape: tuple[int, ...], subset: str = "all"):
    torch.manual_seed(8)
    posterior = GaussianPosterior(shifted_statistics(model.double()), subset).double()
    posterior.eval()
    x = torch.randn(*shape, dtype=F64)
    y = torch.tensor([0, 1, 2, 1, 0])[: shape[0]]
    w = posterior.mean.detach() + 0.1 * torch.randn(posterior.dim, dtype=F64)
    return layer_gradients(posterior, w, x, y), _per_example_vmap(posterior, w, x, y)


class _InPlaceAfter(nn.Module):
    """A ResNet's habits: ReLU(inplace=True) on a BatchNorm's and a convolution's output, and
    ``out += identity`` on a BatchNorm's output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn(self.relu(self.conv(x)))
        out += x
        return self.head(self.relu(out).mean((2, 3)))


@pytest.mark.parametrize("subset", ["all", "norm+head"])
def test_in_place_ops_on_a_layer_output_are_followed(subset: str) -> None:
    """The network goes on with a copy of each hooked output, so in-place ops after a layer do
    not change the gradient taken at its output (torchvision's ResNets were wrong before)."""
    hooks, vmap = _hooks_and_vmap(_InPlaceAfter(), (5, 2, 5, 5), subset)
    assert hooks is not None
    torch.testing.assert_close(hooks, vmap, rtol=0, atol=1e-12)


class _NormAct(nn.BatchNorm2d):
    """A BatchNorm with an activation in its forward (timm's BatchNormAct2d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(super().forward(x))


def test_a_batch_norm_with_its_own_forward_is_followed_through_its_call() -> None:
    """A BatchNorm subclass that adds an activation (timm's BatchNormAct2d): its batch_norm call
    is recorded, so its gradients are the call's, exact against vmap; in training mode (batch
    statistics) it is declined."""
    model = nn.Sequential(_NormAct(2), nn.Flatten(), nn.Linear(50, 3))
    hooks, vmap = _hooks_and_vmap(model, (5, 2, 5, 5))
    assert hooks is not None
    torch.testing.assert_close(hooks, vmap, rtol=0, atol=1e-12)
    posterior = GaussianPosterior(model, "all")
    posterior.train()
    x, y = torch.randn(5, 2, 5, 5, dtype=F64), torch.tensor([0, 1, 2, 1, 0])
    assert layer_gradients(posterior, posterior.mean.detach(), x, y) is None


class _LayerNormAct(nn.LayerNorm):
    """A LayerNorm with an activation in its forward: not followed (its call is not recorded)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(super().forward(x))


class _Folded(nn.Module):
    """Positions folded into the batch dimension before a Linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        return self.lin(x.flatten(2).transpose(1, 2).reshape(-1, 2)).view(n, -1, 3).mean(1)


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)
        self.b.weight = self.a.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x.flatten(1)[:, :3])))


class _NoGradLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.head = nn.Linear(3, 3), nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            h = self.a(x.flatten(1)[:, :3])
        return self.head(h)


class _WeightElsewhere(nn.Conv2d):
    """Uses its weight outside its conv2d call as well."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + self.weight.sum()


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(
            lambda: nn.Sequential(_LayerNormAct(5), nn.Flatten(), nn.Linear(50, 3)),
            id="layer-norm-with-its-own-forward",
        ),
        pytest.param(_Folded, id="positions-folded-into-batch"),
        pytest.param(_Tied, id="tied-weights"),
        pytest.param(_NoGradLayer, id="layer-under-no-grad"),
        pytest.param(
            lambda: nn.Sequential(_WeightElsewhere(2, 3, 3), nn.Flatten(), nn.Linear(27, 3)),
            id="conv-weight-used-elsewhere",
        ),
    ],
)
def test_what_the_formulas_would_get_wrong_is_declined(build) -> None:
    """None (vmap takes over), where vmap's gradients are not the layer formulas'."""
    hooks, _ = _hooks_and_vmap(build(), (5, 2, 5, 5))
    assert hooks is None
