"""Running a network with given tensors in place of its own: plain, tied and parametrized."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parametrize

from sabma import GaussianPosterior
from sabma.posterior.substitute import ParameterSlots
from tests.conftest import TinyResNet


def test_matches_functional_call_and_restores_the_model() -> None:
    torch.manual_seed(0)
    model = TinyResNet().eval()
    x = torch.randn(2, 1, 8, 8)
    own = model(x)
    tensors = {n: torch.randn_like(p) for n, p in model.named_parameters() if "bn" in n}
    tensors["stem.1.running_mean"] = torch.randn(4)
    slots = ParameterSlots(model)
    torch.testing.assert_close(
        slots.call(tensors, (x,)), functional_call(model, tensors, (x,)), atol=0, rtol=0
    )
    torch.testing.assert_close(model(x), own, atol=0, rtol=0)  # everything swapped back
    with pytest.raises(RuntimeError), slots.substituted({"fc.weight": torch.randn(3, 8)}):
        raise RuntimeError("inside")
    assert isinstance(model.fc.weight, nn.Parameter)  # restored after an exception too


def test_tied_weights_are_replaced_under_every_name() -> None:
    embed = nn.Embedding(5, 4)
    head = nn.Linear(4, 5, bias=False)
    head.weight = embed.weight  # tied
    model = nn.Sequential(embed, head)
    new = torch.randn(5, 4)
    out = ParameterSlots(model).call({"0.weight": new}, (torch.tensor([1, 2]),))
    expected = new[torch.tensor([1, 2])] @ new.T
    torch.testing.assert_close(out, expected)


def test_parametrized_networks_go_through_functional_call() -> None:
    class Symmetric(nn.Module):
        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return w.triu() + w.triu(1).T

    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    parametrize.register_parametrization(model[0], "weight", Symmetric())
    posterior = GaussianPosterior(model, "head", init_std=0.1)
    assert posterior.slots.general
    x = torch.randn(4, 3)
    w = posterior.sample_weights(1)[0].detach()
    expected = functional_call(model, posterior.unflatten(w), (x,))
    torch.testing.assert_close(posterior.forward_with(w, x), expected)
