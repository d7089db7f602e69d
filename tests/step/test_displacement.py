"""θ → θ + ε and back: SA-BMA's swap of storages gives the copy-and-add's θ bit for bit, leaves
every parameter in its own storage between steps, and marks each move in its version."""

from __future__ import annotations

import pytest
import torch

from sabma import SABMA
from sabma.posterior.gaussian import content_key
from tests.step.test_step_caches import problem


def trained(monkeypatch: pytest.MonkeyPatch, swap: bool, steps: int = 6) -> list[torch.Tensor]:
    monkeypatch.setattr(SABMA, "move_by_swap", swap)
    posterior, _, step = problem(rank=2, refresh_every=3)
    for _ in range(steps):
        step()
    return [p.detach().clone() for p in (posterior.mean, posterior.log_std, posterior.factor)]


def test_the_swap_trains_as_the_copy_does(monkeypatch: pytest.MonkeyPatch) -> None:
    assert SABMA.move_by_swap  # SA-BMA's own θ moves by swap
    swapped, copied = trained(monkeypatch, True), trained(monkeypatch, False)
    for a, b in zip(swapped, copied, strict=True):
        assert torch.equal(a, b)


def test_parameters_stay_in_their_own_storage_and_each_move_shows() -> None:
    posterior, opt, step = problem(rank=2)
    step()
    params = (posterior.mean, posterior.log_std)
    pointers = [p.data_ptr() for p in params]
    before = [p.detach().clone() for p in params]
    keys = [content_key(p) for p in params]
    view = posterior.mean.detach()  # a view taken between steps, like q_θ's mean

    opt.zero_grad()
    x, y = torch.randn(32, 10), torch.zeros(32, dtype=torch.long)
    torch.nn.functional.cross_entropy(posterior(x), y).backward()
    opt.first_step(zero_grad=True)
    moved_keys = [content_key(p) for p in params]
    assert not torch.equal(posterior.mean.detach(), before[0])  # at θ + ε
    assert torch.equal(view, before[0])  # θ itself untouched
    assert all(m != k for m, k in zip(moved_keys, keys, strict=True))

    opt.abandon_step()
    assert [p.data_ptr() for p in params] == pointers
    for p, b in zip(params, before, strict=True):
        assert torch.equal(p.detach(), b)
    restored = [content_key(p) for p in params]
    assert all(r not in (m, k) for r, m, k in zip(restored, moved_keys, keys, strict=True))
    step()
    assert posterior.mean.data_ptr() == pointers[0]
    assert torch.equal(view, posterior.mean.detach())  # the view follows the update


def test_a_parameter_converted_between_the_passes_gets_theta_back_in_its_new_dtype() -> None:
    posterior, opt, step = problem(rank=2)
    step()
    before = posterior.mean.detach().clone()
    x, y = torch.randn(32, 10), torch.zeros(32, dtype=torch.long)
    opt.zero_grad()
    torch.nn.functional.cross_entropy(posterior(x), y).backward()
    opt.first_step(zero_grad=True)
    posterior.double()  # e.g. after a loop of passes() broken off
    opt.abandon_step()
    assert posterior.mean.dtype == torch.float64
    assert torch.equal(posterior.mean.detach(), before.double())
