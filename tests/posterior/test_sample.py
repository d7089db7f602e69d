"""The sample w = μ + σ⊙z₁ (+ D z₂) as one autograd node: the same values and gradients, bit for
bit, as the node chain it replaces (exp, addcmul, add), and an error, not a wrong answer, for a
second derivative."""

from __future__ import annotations

import pytest
import torch

from sabma.posterior.sample import sample_weights


def leaves(d: int = 50) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    mean = torch.randn(d, requires_grad=True)
    log_std = (0.3 * torch.randn(d) - 2.0).requires_grad_(True)
    return mean, log_std, torch.randn(d), torch.randn(d)


@pytest.mark.parametrize("with_shift", [False, True])
def test_values_and_gradients_are_those_of_the_chain(with_shift: bool) -> None:
    mean, log_std, noise, shift = leaves()
    upstream = torch.randn(mean.shape)
    reference = torch.addcmul(mean, log_std.exp(), noise)
    if with_shift:
        reference = reference + shift
    ref_grads = torch.autograd.grad(reference, [mean, log_std], upstream)
    w = sample_weights(mean, log_std, log_std.detach().exp(), noise, shift if with_shift else None)
    grads = torch.autograd.grad(w, [mean, log_std], upstream)
    assert torch.equal(w, reference)
    assert all(torch.equal(a, b) for a, b in zip(grads, ref_grads, strict=True))


def test_only_the_inputs_that_need_it_get_a_gradient() -> None:
    mean, log_std, noise, _ = leaves()
    w = sample_weights(mean, log_std.detach(), log_std.detach().exp(), noise)
    w.sum().backward()
    assert log_std.grad is None and torch.equal(mean.grad, torch.ones_like(mean))


def test_a_second_derivative_is_refused() -> None:
    mean, log_std, noise, _ = leaves()
    w = sample_weights(mean, log_std, log_std.detach().exp(), noise)
    (g,) = torch.autograd.grad(w.square().sum(), [log_std], create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()
