"""SAM: the update of a hand-written SAM, running statistics restored, optimiser hygiene."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn.functional import cross_entropy

from sabma import SAM
from tests.conftest import TinyResNet, mlp
from tests.step.reference import manual_sam


def test_matches_a_hand_written_sam() -> None:
    model = mlp().double()
    reference = copy.deepcopy(model)
    x, y = torch.randn(16, 2, dtype=torch.float64), torch.randint(0, 3, (16,))
    opt = SAM(model.parameters(), lr=0.1, momentum=0.9, rho=0.05)

    def closure() -> torch.Tensor:
        loss = cross_entropy(model(x), y)
        loss.backward()
        return loss

    for _ in range(3):
        opt.zero_grad()
        opt.step(closure)
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    expected = manual_sam(reference, x, y, steps=3, lr=0.1, momentum=0.9, rho=0.05)
    torch.testing.assert_close(flat, expected, atol=1e-12, rtol=0)
    assert opt.state is opt.base_optimizer.state
    assert all(set(s) == {"momentum_buffer"} for s in opt.state.values())


def test_theta_is_put_back_exactly_after_the_model_changed_dtype() -> None:
    """θ waits in a buffer kept between steps; after ``model.double()`` the buffer follows the
    parameter's dtype, so θ comes back bit for bit (a float32 buffer would round it)."""
    model = mlp()
    x, y = torch.randn(16, 2), torch.randint(0, 3, (16,))
    opt = SAM(model.parameters(), lr=0.1, rho=0.05)

    def closure() -> torch.Tensor:
        loss = cross_entropy(model(x), y)
        loss.backward()
        return loss

    opt.step(closure)
    model.double()
    x = x.double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-12 * torch.randn_like(p))  # digits a float32 backup would lose
    before = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    closure()
    opt.first_step(zero_grad=True)
    opt.second_step(update=False)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


def test_running_statistics_follow_the_first_pass_only() -> None:
    model = TinyResNet().train()
    reference = copy.deepcopy(model)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    with torch.no_grad():
        reference(x)  # one plain forward: the statistics after one update
    opt = SAM(model.parameters(), lr=0.1, rho=0.1, model=model)

    def closure() -> torch.Tensor:
        loss = cross_entropy(model(x), y)
        loss.backward()
        return loss

    opt.step(closure)
    buffers = dict(model.named_buffers())
    for name, value in reference.named_buffers():
        torch.testing.assert_close(buffers[name], value, msg=name)


def test_fisher_sam_reduces_to_sam_at_eta_zero_and_preconditions_otherwise() -> None:
    from sabma.step.fsam import FSAM

    model = mlp().double()
    x, y = torch.randn(16, 2, dtype=torch.float64), torch.randint(0, 3, (16,))
    cross_entropy(model(x), y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    sam_eps = [e for _, e in SAM(model.parameters(), lr=0.1, rho=0.05).perturbation()]
    zero = [e for _, e in FSAM(model.parameters(), lr=0.1, rho=0.05, eta=0.0).perturbation()]
    for a, b in zip(sam_eps, zero, strict=True):
        torch.testing.assert_close(a, b)
    fisher = [e for _, e in FSAM(model.parameters(), lr=0.1, rho=0.05, eta=10.0).perturbation()]
    largest = max(float(g.square().max()) for g in grads)  # η is relative to the largest g²
    direction = [g / (1 + 10.0 * g * g / largest) for g in grads]
    norm = torch.sqrt(sum((g * d).sum() for g, d in zip(grads, direction, strict=True)))
    for e, d in zip(fisher, direction, strict=True):
        torch.testing.assert_close(e, 0.05 * d / norm)


def test_fisher_sam_at_its_default_is_not_sam_on_a_real_network() -> None:
    """EfficientNet-Lite0 norm+head, 25 inputs at 32 px: the case where the paper's absolute η
    gave cos = 0.99997 (SAM); the scale-free default must move the ascent measurably."""
    from sabma import select_parameters
    from sabma.methods.fsam_method import FSAMOptions
    from sabma.models import build_backbone
    from sabma.step.fsam import FSAM

    torch.manual_seed(0)
    model = build_backbone("efficientnet_lite0", 10).model.eval()
    params = dict(model.named_parameters())
    model.requires_grad_(False)
    chosen = [params[n] for n in select_parameters(model, "norm+head")]
    for p in chosen:
        p.requires_grad_(True)
    x, y = torch.randn(25, 3, 32, 32), torch.randint(0, 10, (25,))
    cross_entropy(model(x), y).backward()

    def ascent(optimizer: SAM) -> torch.Tensor:
        return torch.cat([e.reshape(-1) for _, e in optimizer.perturbation()])

    sam = ascent(SAM(chosen, lr=0.1, rho=0.05))
    default = ascent(FSAM(chosen, lr=0.1, rho=0.05, eta=FSAMOptions().eta))
    cosine = float(torch.nn.functional.cosine_similarity(default, sam, dim=0))
    assert cosine < 0.99, cosine
    assert float(default.norm()) == pytest.approx(float(sam.norm()), rel=0.5)  # both in the ball
    torch.testing.assert_close(ascent(FSAM(chosen, lr=0.1, rho=0.05, eta=0.0)), sam)
