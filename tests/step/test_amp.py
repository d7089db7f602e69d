"""fp16 loss scaling of SAM-type steps: unscale before ε, skip both passes on overflow."""

from __future__ import annotations

import copy

import torch
from torch import Tensor
from torch.nn.functional import cross_entropy

from sabma import SABMA, SAM, GaussianPosterior
from sabma.step.amp import scaled_step
from tests.conftest import mlp


class RecordingSAM(SAM):
    """SAM that records the gradient it forms ε from."""

    seen: list[Tensor]

    def perturbation(self) -> list[tuple[Tensor, Tensor]]:
        self.seen.append(torch.cat([p.grad.reshape(-1) for p in self.param_groups[0]["params"]]))
        return super().perturbation()


def _data() -> tuple[Tensor, Tensor]:
    torch.manual_seed(0)
    return torch.randn(16, 2), torch.randint(0, 3, (16,))


def test_a_scaled_step_equals_the_unscaled_step_and_forms_epsilon_from_unscaled_grads() -> None:
    x, y = _data()
    model = mlp()
    twin = copy.deepcopy(model)
    scaled = RecordingSAM(model.parameters(), lr=0.1, momentum=0.9, rho=0.05, perturb_every=2)
    plain = RecordingSAM(twin.parameters(), lr=0.1, momentum=0.9, rho=0.05, perturb_every=2)
    scaled.seen, plain.seen = [], []
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    for _ in range(3):  # fresh, lazy, fresh
        scaled.zero_grad()
        _, updated = scaled_step(scaled, scaler, lambda: cross_entropy(model(x), y))
        assert updated
        plain.zero_grad()

        def closure() -> Tensor:
            loss = cross_entropy(twin(x), y)
            loss.backward()
            return loss

        plain.step(closure)
    for a, b in zip(scaled.seen, plain.seen, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)
    assert scaler.get_scale() == 1024.0


def _overflow_on(call: int, model: torch.nn.Module, x: Tensor, y: Tensor) -> object:
    calls = [0]

    def loss_fn() -> Tensor:
        calls[0] += 1
        loss = cross_entropy(model(x), y)
        return loss * 1e36 if calls[0] == call else loss

    loss_fn.calls = calls  # type: ignore[attr-defined]
    return loss_fn


def test_overflow_in_either_pass_skips_the_step_and_backs_off() -> None:
    x, y = _data()
    for call in (1, 2):
        torch.manual_seed(3)
        model = mlp()
        posterior = GaussianPosterior(model, "all", rank=2, init_std=0.01)
        opt = SABMA(posterior, variance="gradient", lr=0.1, momentum=0.9, rho=0.5)
        before = copy.deepcopy(posterior.state_dict())
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
        loss_fn = _overflow_on(call, posterior, x, y)
        opt.zero_grad()
        _, updated = scaled_step(opt, scaler, loss_fn)  # type: ignore[arg-type]
        assert not updated
        assert loss_fn.calls[0] == call  # type: ignore[attr-defined]
        for name, value in posterior.state_dict().items():
            assert torch.equal(value, before[name]), (call, name)  # θ and the noise kept
        assert not opt._perturbed and opt.state == {}
        assert scaler.get_scale() == 2.0**15
        assert posterior.update_running_stats
        # the next step goes through and updates θ
        opt.zero_grad()
        _, updated = scaled_step(opt, scaler, lambda p=posterior: cross_entropy(p(x), y))
        assert updated and not torch.equal(posterior.mean, before["mean"])


def test_a_disabled_scaler_is_the_plain_step() -> None:
    x, y = _data()
    model = mlp()
    twin = copy.deepcopy(model)
    opts = [SAM(m.parameters(), lr=0.1, rho=0.05) for m in (model, twin)]
    scaled_step(
        opts[0], torch.amp.GradScaler("cpu", enabled=False), lambda: cross_entropy(model(x), y)
    )

    def closure() -> Tensor:
        loss = cross_entropy(twin(x), y)
        loss.backward()
        return loss

    opts[1].step(closure)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=0, rtol=0)


def test_weights_are_formed_in_full_precision_under_autocast() -> None:
    torch.manual_seed(4)
    posterior = GaussianPosterior(mlp(), "all", rank=3, init_std=0.1)
    with torch.no_grad():
        posterior.factor.normal_(std=0.3)
    exact = posterior.weights()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = posterior.weights()
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, exact, atol=0, rtol=0)
