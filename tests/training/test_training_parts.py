"""Pieces of the training loop: the frozen-rest sampler and the learning-rate schedule."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from sabma import select_parameters
from sabma.models.tiny import TinyCNN
from sabma.step.schedule import warmup_cosine
from sabma.training.frozen import FrozenRest


def test_frozen_rest_is_resampled_around_w_pre_and_restored_exactly() -> None:
    model = TinyCNN(3)
    subset = select_parameters(model, "norm+head", head="fc")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    frozen = FrozenRest(model, subset, std=0.05)
    frozen.resample(torch.Generator().manual_seed(0))
    params = dict(model.named_parameters())
    conv = params["features.0.weight"]
    noise = (conv - before["features.0.weight"]).detach()
    assert 0.04 < float(noise.std()) < 0.06 and abs(float(noise.mean())) < 0.01
    for name in subset:  # the Bayesian subset is never touched
        assert torch.equal(params[name], before[name])
    frozen.restore()
    for name, value in model.named_parameters():
        assert torch.equal(value, before[name])
    with pytest.raises(ValueError, match="frozen_std"):
        FrozenRest(model, subset, std=-1.0)


def test_warmup_then_cosine_to_zero() -> None:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = warmup_cosine(opt, total_steps=10, warmup_steps=2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    assert lrs[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert lrs[5] == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 8)))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[1:]))


def test_cosine_stops_at_its_floor() -> None:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2.0)
    schedule = warmup_cosine(opt, total_steps=6, warmup_steps=0, floor=0.25)
    for _ in range(6):
        opt.step()
        schedule.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="floor"):
        warmup_cosine(opt, 6, 0, floor=1.5)
