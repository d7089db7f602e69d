"""The drop-in SA-BMA: ``SABMA(model, data=loader)`` around the user's own ``model(x)``."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn.functional import cross_entropy
from torch.utils.data import DataLoader, TensorDataset

from sabma import SABMA, GaussianPosterior, NaturalVariance
from sabma.config.sections import InitConfig, OptimConfig, PriorConfig
from sabma.models.head_scale import HEAD_LOGIT_VAR, head_feature_scale
from sabma.posterior.prior import head_mask
from sabma.step.options import SABMAOptions
from sabma.variance.natural import Curvature
from sabma.variance.options import VarianceOptions

N, BATCH = 24, 8


def bn_model() -> nn.Sequential:
    """A small classifier whose BatchNorm runs in train mode (running statistics move)."""
    return nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


def ln_model() -> nn.Sequential:
    """No batch statistics: a batch's loss is the mean of its examples' losses."""
    return nn.Sequential(nn.Linear(4, 16), nn.LayerNorm(16), nn.Tanh(), nn.Linear(16, 3))


def loader(shuffle: bool = False) -> DataLoader:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(N, 4, generator=gen)
    y = torch.randint(0, 3, (N,), generator=gen)
    return DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=shuffle)


def run_in_place(model: nn.Module, steps: int, accumulate: int = 1, **kwargs) -> SABMA:
    data = loader()
    torch.manual_seed(0)
    opt = SABMA(model, data=data, lr=0.05, **kwargs)
    batches = list(data)
    for step in range(steps):
        x, y = batches[step % len(batches)]
        torch.manual_seed(100 + step)
        for _ in opt.passes():
            for xb, yb in zip(x.chunk(accumulate), y.chunk(accumulate), strict=True):
                (cross_entropy(model(xb), yb) / accumulate).backward()
        opt.step()
    return opt


def test_in_place_step_equals_the_posterior_forward() -> None:
    """The user's model(x) at the sample written in place, gradients moved to θ by the chain
    rule, equals the functional forward through the posterior (μ, σ, D, BatchNorm statistics)
    over several steps with Fisher refreshes (the factor included)."""
    model = bn_model()
    twin = copy.deepcopy(model)
    every_pass = NaturalVariance(data=loader(), refresh_epochs=1)  # a refresh every few steps
    dropin = run_in_place(model, steps=7, variance=every_pass)
    assert dropin.in_place

    torch.manual_seed(0)
    posterior = GaussianPosterior(twin, "norm+head", rank=SABMAOptions.rank, init_std=0.01)
    data = loader()
    opt = SABMA(
        posterior,
        data=data,
        lr=0.05,
        prior=dropin.natural.prior,  # type: ignore[union-attr]
        variance=NaturalVariance(data=data, refresh_epochs=1),
    )
    batches = list(data)
    for step in range(7):
        x, y = batches[step % len(batches)]
        torch.manual_seed(100 + step)
        opt.zero_grad()
        opt.step(lambda x=x, y=y: cross_entropy(posterior(x), y).backward())  # type: ignore[misc]
    assert not opt.in_place
    for name in ("mean", "log_std", "factor"):
        a, b = getattr(dropin.posterior, name), getattr(posterior, name)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert float(posterior.factor.abs().max()) > 0  # the factor was refreshed, not left at 0
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values(), strict=True):
        if "running" in name:  # updated once per step, by the first pass
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    # between steps the model holds the posterior mean
    params = dict(model.named_parameters())
    for name, value in dropin.posterior.unflatten(dropin.posterior.mean.detach()).items():
        torch.testing.assert_close(params[name].detach(), value)


@pytest.mark.parametrize("accumulate", [2, 4])
def test_gradient_accumulation_equals_the_big_batch(accumulate: int) -> None:
    """k micro-batches of loss/k inside each pass = one pass over their union: both passes see
    the same noise, ε is formed from the accumulated first-pass gradient."""
    big = run_in_place(ln_model(), steps=6)
    torch.manual_seed(0)
    small = run_in_place(ln_model(), steps=6, accumulate=accumulate)
    for name in ("mean", "log_std"):
        a, b = getattr(big.posterior, name), getattr(small.posterior, name)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    # the factor's columns are eigen-directions of near-equal eigenvalues here (column norms
    # 0.075–0.079): float rounding turns them within their span; DDᵀ is what must agree
    a, b = (o.posterior.factor.detach().double() for o in (big, small))
    assert float(a.abs().max()) > 0
    scale = float((a @ a.T).abs().max())
    torch.testing.assert_close(a @ a.T, b @ b.T, rtol=0, atol=1e-4 * scale)


def test_defaults_are_the_trainers() -> None:
    """Every default the drop-in fills in is the CLI's (the config dataclasses)."""
    model = bn_model()
    data = loader()
    opt = SABMA(model, data=data)
    s, v = SABMAOptions(), VarianceOptions()
    assert opt.rho == s.rho and opt.metric == s.metric and list(opt.perturb) == s.perturb
    assert opt.perturb_every == s.perturb_every and opt.posterior.rank == s.rank
    group = opt.param_groups[0]
    assert group["lr"] == OptimConfig.lr and group["momentum"] == OptimConfig.momentum
    assert group["weight_decay"] == OptimConfig.weight_decay
    assert torch.allclose(opt.posterior.std, torch.full_like(opt.posterior.std, 0.01))
    assert InitConfig.norm_std == InitConfig.head_std == 0.01
    o = opt.natural.options  # type: ignore[union-attr]
    assert (o.temperature, o.curvature, o.source, o.beta2) == (
        v.temperature,
        v.curvature,
        v.curvature_source,
        v.curvature_beta2,
    )
    assert (o.label_samples, o.max_examples) == (v.fisher_samples, v.fisher_examples)
    assert o.ess == N and o.refresh_every == math.ceil(N / BATCH) * v.refresh_epochs
    # the prior: N(w_start, τ²) off the head, N(0, α) on it with the automatic α
    prior, posterior = opt.natural.prior, opt.posterior  # type: ignore[union-attr]
    is_head = head_mask(posterior, "3")
    assert torch.equal(prior.mean[~is_head], posterior.mean.detach()[~is_head])
    assert torch.all(prior.mean[is_head] == 0)
    assert torch.allclose(prior.var[~is_head], torch.tensor(PriorConfig.norm_std**2))
    alpha = HEAD_LOGIT_VAR / head_feature_scale(posterior, "3", data)
    assert torch.allclose(prior.var[is_head], torch.tensor(alpha))
    # the natural-variance class alone has the same defaults
    alone = NaturalVariance(ess=10, data=torch.zeros(3, 4))
    assert alone.curvature is Curvature(v.curvature) and alone.temperature == v.temperature


def test_dict_batches_and_a_lazy_or_zero_radius_step() -> None:
    """Loaders of dicts (Hugging Face style: labels under "labels") feed the Fisher; a lazy
    step and ρ = 0 take one pass."""

    class KeywordModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = ln_model()

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return self.body(features)

    x, y = torch.randn(N, 4), torch.randint(0, 3, (N,))
    dicts = [{"features": x[i : i + BATCH], "labels": y[i : i + BATCH]} for i in range(0, N, 8)]
    model = KeywordModel()
    opt = SABMA(model, data=dicts, ess=N, lr=0.05, perturb_every=2)
    counts = []
    for batch in dicts:
        passes = 0
        for _ in opt.passes():
            passes += 1
            cross_entropy(model(batch["features"]), batch["labels"]).backward()
        opt.step()
        counts.append(passes)
    assert counts == [2, 1, 2]
    flat = SABMA(ln_model(), data=loader(), rho=0.0)
    assert sum(1 for _ in flat.passes()) == 1


def test_bad_input_is_one_clear_line() -> None:
    with pytest.raises(ValueError, match="does not run on a batch of data=: mat1 and mat2"):
        SABMA(bn_model(), data=DataLoader(TensorDataset(torch.randn(8, 5), torch.zeros(8))))
    with pytest.raises(ValueError, match="yields no batches"):
        SABMA(bn_model(), data=[])
    with pytest.raises(ValueError, match="cannot find the model's inputs in a batch of type str"):
        SABMA(bn_model(), data=["text"])
    with pytest.raises(ValueError, match="ess= is needed"):
        SABMA(bn_model(), data=iter([torch.randn(4, 4)]))


def test_fp16_loss_scaling_in_passes() -> None:
    """With a gradient scaler the steps equal unscaled ones (the first pass's gradient is
    unscaled before it forms ε; the reparam curvature from the clean pass sees it unscaled);
    an overflow skips the step (θ as before), and the next step runs."""

    def train(scale: float | None, steps: int = 4) -> SABMA:
        torch.manual_seed(0)
        model = ln_model()
        data = loader()
        kwargs = {
            "variance": NaturalVariance(ess=N, curvature="reparam", source="clean"),
            "head_prior_var": 1.0,
        }
        opt = SABMA(model, data=data, lr=0.05, **kwargs)
        scaler = torch.amp.GradScaler("cpu", init_scale=scale or 1.0, enabled=scale is not None)
        for step, (x, y) in enumerate(list(data)[:steps]):
            torch.manual_seed(100 + step)
            for _ in opt.passes(scaler=scaler):
                scaler.scale(cross_entropy(model(x), y)).backward()
            scaler.step(opt)
            scaler.update()
        return opt

    plain, scaled = train(None), train(2.0**12)
    for name in ("mean", "log_std"):
        a, b = getattr(plain.posterior, name), getattr(scaled.posterior, name)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    # overflow at the first pass: the step is skipped, θ unchanged
    model = ln_model()
    opt = SABMA(model, data=loader(), lr=0.05, head_prior_var=1.0)
    before = opt.posterior.mean.detach().clone()
    scaler = torch.amp.GradScaler("cpu", init_scale=1e38)
    x, y = next(iter(loader()))
    count = 0
    for _ in opt.passes(scaler=scaler):
        count += 1
        scaler.scale(10 * cross_entropy(model(x), y)).backward()  # 1e39: inf in float32
    scaler.step(opt)
    scaler.update()
    assert count == 1 and torch.equal(opt.posterior.mean.detach(), before)
    assert scaler.get_scale() < 1e38
    for _ in opt.passes(scaler=scaler):  # the skipped step is abandoned; this one runs
        scaler.scale(cross_entropy(model(x), y)).backward()
    scaler.step(opt)
    assert not torch.equal(opt.posterior.mean.detach(), before)


def test_every_shared_default_is_the_config_sections() -> None:
    """The signatures' defaults of SABMA and NaturalVariance against the config dataclasses the
    trainer reads (so the library and the command line cannot drift apart again)."""
    import dataclasses
    import inspect

    s, v = SABMAOptions(), VarianceOptions()
    signature = inspect.signature(SABMA.__init__).parameters
    shared = {"rho": s.rho, "metric": s.metric, "perturb_every": s.perturb_every}
    for name, value in shared.items():
        assert signature[name].default == value, name
    assert list(signature["perturb"].default) == s.perturb
    fields = {f.name: f.default for f in dataclasses.fields(NaturalVariance)}
    pairs = {
        "temperature": v.temperature,
        "curvature": v.curvature,
        "source": v.curvature_source,
        "beta2": v.curvature_beta2,
        "label_samples": v.fisher_samples,
        "max_examples": v.fisher_examples,
        "batch_size": OptimConfig.batch_size,
        "ess": v.ess,  # 0: the training set's size, in both
        "refresh_epochs": v.refresh_epochs,
    }
    for name, value in pairs.items():
        assert fields[name] == value, name
