"""The IVON baseline: the ivon-opt package as published, over the Bayesian subset's mean."""

from __future__ import annotations

import pytest
import torch

from sabma import GaussianPosterior
from sabma.config import config_from_dict
from sabma.methods import get_method
from tests.conftest import mlp

pytest.importorskip("ivon")


def test_ivon_samples_each_step_and_its_sigma_follows_the_packages_curvature() -> None:
    cfg = config_from_dict(
        {},
        ["method.name=ivon", "optim.lr=0.1", "method.ivon.hess_init=0.5", "method.ivon.beta2=0.9"],
    )
    posterior = GaussianPosterior(mlp(), "all")
    method = get_method("ivon")
    opt = method.build_optimizer(posterior, None, cfg, n=20)
    group = opt.param_groups[0]
    # σ = 1/√(λ(h + δ)) with λ = N/T (T = method.ivon.temperature) and the package's h₀, δ
    ess = 20 / cfg.method.ivon.temperature
    expected = (ess * (0.5 + cfg.method.ivon.weight_decay)) ** -0.5
    torch.testing.assert_close(posterior.std.detach(), torch.full_like(posterior.mean, expected))
    seen = []
    hook = posterior.model.register_forward_pre_hook(
        lambda *_: seen.append(posterior.mean.detach().clone())
    )
    x, y = torch.randn(16, 2), torch.randint(0, 3, (16,))
    before = posterior.mean.detach().clone()
    for _ in range(3):
        method.step(posterior, opt, x, y)
    hook.remove()
    assert not torch.equal(seen[0], before)  # the forward pass ran at a sample, not at μ
    assert not torch.equal(posterior.mean.detach(), before)
    precision = group["ess"] * (group["hess"] + group["weight_decay"])
    torch.testing.assert_close(posterior.std.detach(), precision.rsqrt())
    assert float(posterior.std.std()) > 0  # h moved away from h₀ per coordinate
    assert method.state_dict() == {"current_step": 3}


def test_ivon_refuses_fp16_loss_scaling() -> None:
    cfg = config_from_dict({}, ["method.name=ivon"])
    assert not get_method("ivon").supports_loss_scaling(cfg)
