"""The method registry and each method's defining property."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from sabma import GaussianPosterior
from sabma.cli.main import main
from sabma.config import config_from_dict
from sabma.methods import METHODS, get_method
from sabma.pipeline.evaluate import evaluate_run, load_run
from sabma.pipeline.predictive import RunPredictive
from sabma.pipeline.train import train_run
from sabma.step.sam import SAM
from tests.conftest import mlp
from tests.data.helpers import write_fake_fashion_mnist
from tests.pipeline.test_pipeline import TINY


def test_registry_names_and_listing(capsys: pytest.CaptureFixture[str]) -> None:
    assert {"sgd", "sam", "sabma", "swag", "fswag"} <= set(METHODS)
    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    knob_lines = [line for line in lines if line.lstrip().startswith("knob: ")]
    assert len(lines) - len(knob_lines) == len(METHODS)
    assert len(knob_lines) == sum(1 for cls in METHODS.values() if cls.knob)
    assert any(line.startswith("swag ") and "Bayesian" in line for line in lines)
    sam = lines.index(next(line for line in lines if line.startswith("sam ")))
    assert lines[sam + 1].strip() == "knob: method.sam.rho, benchmark grid [0.01, 0.05, 0.2]"
    with pytest.raises(ValueError, match=r"unknown method 'nope'; choose one of \["):
        get_method("nope")
    assert get_method("swag") is not get_method("swag")  # fresh state per run


def test_swag_method_forms_the_gaussian_of_the_collected_snapshots() -> None:
    """Snapshots after epochs ≥ swag_start (every 2nd): mean, ½ variance, D̂/√(2(K−1))."""
    cfg = config_from_dict(
        {},
        [
            "method.name=swag",
            "method.swag.rank=2",
            "method.swag.start=2",
            "method.swag.every=2",
            "prior.var_floor=1e-12",
        ],
    )
    posterior = GaussianPosterior(mlp(), "all", rank=2)
    method = get_method("swag")
    snapshots = {e: torch.randn(posterior.dim) for e in range(1, 8)}
    for epoch, w in snapshots.items():
        with torch.no_grad():
            posterior.mean.copy_(w)
        method.on_epoch_end(posterior, epoch, cfg)
    method.finish(posterior, cfg)
    taken = torch.stack([snapshots[e] for e in (2, 4, 6)])
    mean = taken.mean(0)
    torch.testing.assert_close(posterior.mean.detach(), mean)
    var = taken.var(0, unbiased=False) / 2
    torch.testing.assert_close(posterior.std.detach() ** 2, var, rtol=1e-4, atol=1e-6)
    deviations = torch.stack([snapshots[4] - taken[:2].mean(0), snapshots[6] - mean], 1)
    torch.testing.assert_close(posterior.factor.detach(), deviations / math.sqrt(2))


def test_swag_without_snapshots_is_a_clear_error() -> None:
    cfg = config_from_dict({}, ["method.name=swag", "method.swag.start=99", "optim.epochs=5"])
    with pytest.raises(ValueError, match="collected no snapshot"):
        get_method("swag").finish(GaussianPosterior(mlp(), "all", rank=1), cfg)


@pytest.mark.parametrize("name", ["sam", "fswag", "fsam"])
def test_sam_family_reads_its_own_radius(name: str) -> None:
    cfg = config_from_dict({}, [f"method.{name}.rho=0.07", f"method.{name}.perturb_every=3"])
    posterior = GaussianPosterior(mlp(), "all")
    for other in {"sam", "fswag", "fsam"} - {name}:  # another method's section is not read
        opt = get_method(other).build_optimizer(posterior, None, cfg, n=10)
        assert isinstance(opt, SAM) and opt.rho == 0.05
    opt = get_method(name).build_optimizer(posterior, None, cfg, n=10)
    assert isinstance(opt, SAM) and opt.rho == 0.07 and opt.perturb_every == 3


def test_fsam_reads_its_eta() -> None:
    cfg = config_from_dict({}, ["method.fsam.eta=0.3"])
    posterior = GaussianPosterior(mlp(), "all")
    from sabma.step.fsam import FSAM

    fsam = get_method("fsam").build_optimizer(posterior, None, cfg, n=10)
    assert isinstance(fsam, FSAM) and fsam.eta == 0.3


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_end_to_end(tmp_path: Path, name: str) -> None:
    root = tmp_path / "data"
    write_fake_fashion_mnist(root)
    cfg = config_from_dict(
        {},
        [
            *TINY,
            f"data.root={root}",
            f"method.name={name}",  # every method at its defaults on a 4-epoch budget (SWAG
            "method.ptl.weight=0.01",  # collects from half the budget, whatever its length)
            "method.emcmc.eta=0.5",
            "prior.norm_std=0.1",  # a prior that plain SGLD at lr 0.05 descends stably
        ],
    )
    metrics = train_run(cfg, tmp_path / "run", progress=False)
    method = METHODS[name]
    saved = json.loads((tmp_path / "run" / "posterior.json").read_text())
    draws = saved.get("weight_set_size", cfg.eval.samples)  # a sample set, or Gaussian draws
    closed_form = name == "laplace"  # laplace-torch's probit predictive
    assert metrics["samples"] == (1 if method.point else 0 if closed_form else draws)
    assert ("weight_set_size" in saved) == (name in ("ensemble", "csgld", "emcmc", "mcdropout"))
    assert math.isfinite(metrics["test"]["bma"]["nll"])


@pytest.mark.parametrize("variance", ["natural", "gradient"])
def test_vi_starts_at_moped_and_draws_fresh_noise_every_step(variance: str) -> None:
    """Both VI variants: MOPED start, one fresh draw per step; natural VI is the SA-BMA optimiser
    at ρ = 0 (one pass a step), BBB adds the β/N-weighted KL."""
    from sabma.posterior.lowrank import LowRankGaussian
    from sabma.posterior.prior import head_mask, isotropic_prior
    from sabma.step.sabma import SABMA

    cfg = config_from_dict(
        {},
        [
            "method.name=vi",
            "method.vi.moped_delta=0.1",
            "method.variance.beta=1",
            "optim.lr=0.01",
            f"method.variance.kind={variance}",
            "method.variance.curvature=reparam",
        ],
    )
    posterior = GaussianPosterior(mlp(), "all")
    is_head = head_mask(posterior, "3")
    w_pre = posterior.mean.detach().clone()
    prior = isotropic_prior(w_pre, is_head, norm_std=1.0, head_var=1.0)
    start = LowRankGaussian(
        torch.where(is_head, 0.0, w_pre),
        torch.full_like(w_pre, cfg.init.head_std**2),
        w_pre.new_zeros(w_pre.numel(), 0),
    )
    method = get_method("vi")
    method.initialise(posterior, start, is_head, cfg)
    torch.testing.assert_close(posterior.std.detach()[~is_head], 0.1 * w_pre[~is_head].abs())
    head_std = torch.full((int(is_head.sum()),), cfg.init.head_std)
    torch.testing.assert_close(posterior.std.detach()[is_head], head_std)
    opt = method.build_optimizer(posterior, prior, cfg, n=20)
    x, y = torch.randn(8, 2), torch.randint(0, 3, (8,))
    calls = []
    model = posterior.model
    hook = model.register_forward_hook(lambda *_: calls.append(1))
    noises = []
    for _ in range(2):
        method.step(posterior, opt, x, y)
        noises.append(posterior.noise_diag.clone())
    hook.remove()
    assert not torch.equal(noises[0], noises[1])
    assert len(calls) == 2  # one forward pass per step
    if variance == "natural":
        assert isinstance(opt, SABMA) and opt.rho == 0 and opt.natural is not None
        assert "curvature" in opt.state_dict()["natural_variance"]
    else:
        assert isinstance(prior, LowRankGaussian) and method.kl_weight == pytest.approx(1 / 20)


def test_ptl_gradient_is_the_nll_plus_the_prior_pull() -> None:
    from torch.nn.functional import cross_entropy

    from sabma.posterior.lowrank import LowRankGaussian

    cfg = config_from_dict(
        {}, ["method.name=ptl", "method.ptl.weight=2.0", "optim.lr=0.1", "optim.momentum=0.0"]
    )
    posterior = GaussianPosterior(mlp(), "all").double()
    d = posterior.dim
    prior = LowRankGaussian(
        torch.zeros(d, dtype=torch.float64),
        torch.full((d,), 0.5, dtype=torch.float64),
        0.1 * torch.randn(d, 2, dtype=torch.float64),
    )
    x, y = torch.randn(8, 2, dtype=torch.float64), torch.randint(0, 3, (8,))
    mu = posterior.mean.detach().clone()
    (g_data,) = torch.autograd.grad(cross_entropy(posterior.mean_forward(x), y), posterior.mean)
    pull = prior.precision_matvec(mu - prior.mean) * 2.0 / 10
    method = get_method("ptl")
    opt = method.build_optimizer(posterior, prior, cfg, n=10)
    method.step(posterior, opt, x, y)
    torch.testing.assert_close(posterior.mean.detach(), mu - 0.1 * (g_data.detach() + pull))


def test_ensemble_members_differ_and_the_predictive_averages_them(tmp_path: Path) -> None:
    from sabma.pipeline.evaluate import evaluate_run

    root = tmp_path / "data"
    write_fake_fashion_mnist(root)
    cfg = config_from_dict(
        {},
        [
            *TINY,
            f"data.root={root}",
            "method.name=ensemble",
            "method.ensemble.size=3",
            "init.head_std=0.1",
        ],
    )
    out = tmp_path / "run"
    metrics = train_run(cfg, out, progress=False)
    assert metrics["samples"] == 3
    from safetensors.torch import load_file

    members = load_file(str(out / "posterior.safetensors"))["weight_set"]
    assert members.shape[0] == 3
    assert not torch.allclose(members[0], members[1]) and not torch.allclose(members[1], members[2])
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert sorted({e["member"] for e in log}) == [0, 1, 2]
    assert evaluate_run(out, progress=False)["test"] == metrics["test"]  # the set is reloaded


def test_csgld_noise_has_the_langevin_scale_and_samples_come_from_the_cycle_ends() -> None:
    """With zero inputs the weights of a linear layer get no gradient, so each step's change is
    the Langevin noise alone: std √(2·lr_k·T/N) in the sampling phase, nothing outside it."""
    from torch import nn

    cfg = config_from_dict(
        {},
        [
            "method.name=csgld",
            "optim.epochs=6",
            "method.csgld.cycles=2",
            "method.csgld.sample_fraction=0.5",
            "optim.lr=0.02",
            "optim.momentum=0",
            "method.csgld.temperature=2.0",
        ],
    )
    posterior = GaussianPosterior(nn.Sequential(nn.Linear(2, 500)), r"weight$")
    method = get_method("csgld")
    opt = method.build_optimizer(posterior, None, cfg, n=50)
    schedule = method.schedule(opt, steps_per_epoch=1, cfg=cfg)  # 2 cycles of 3 steps
    x, y = torch.zeros(4, 2), torch.randint(0, 500, (4,))
    kept = []
    for epoch in range(1, 7):
        lr = opt.param_groups[0]["lr"]
        before = posterior.mean.detach().clone()
        method.step(posterior, opt, x, y)
        change = posterior.mean.detach() - before
        sampling = bool(change.abs().max() > 0)
        if sampling:
            assert float(change.std()) == pytest.approx((2 * lr * 2.0 / 50) ** 0.5, rel=0.1)
        method.on_epoch_end(posterior, epoch, cfg)
        kept.append(sampling)
        schedule.step()
    assert kept == [False, False, True, False, False, True]  # the last third of each cycle
    samples = method.samples()
    assert samples is not None and samples.shape == (2, posterior.dim)


def test_mc_dropout_averages_stochastic_passes_with_dropout_on(tmp_path: Path) -> None:
    from torch import nn

    from sabma.methods.mcdropout import enable_dropout

    root = tmp_path / "data"
    write_fake_fashion_mnist(root)
    cfg = config_from_dict(
        {}, [*TINY, f"data.root={root}", "method.name=mcdropout", "method.mcdropout.p=0.5"]
    )
    out = tmp_path / "run"
    metrics = train_run(cfg, out, progress=False)
    assert metrics["samples"] == cfg.eval.samples
    # the BMA differs from the deterministic mean only because dropout is on when predicting
    assert metrics["test"]["bma"] != metrics["test"]["mean"]
    # S is the evaluation's (here 3), not the length of the stored weight set (S copies of μ)
    run = load_run(out)
    assert run.weight_set is not None and len(run.weight_set) == cfg.eval.samples
    predictive = RunPredictive(run.cfg, run.posterior, run.method, 3, run.weight_set)
    assert predictive.samples_used == 3
    assert predictive.weights is not None and predictive.weights.shape == (3, run.posterior.dim)
    again = evaluate_run(out, samples=3, progress=False)
    assert again["samples"] == 3 and again["test"]["bma"] != metrics["test"]["bma"]
    assert again["test"]["mean"] == metrics["test"]["mean"]
    posterior = GaussianPosterior(nn.Sequential(nn.Linear(3, 3)), "all")
    with pytest.raises(ValueError, match="needs dropout layers"):
        enable_dropout(posterior.model, 0.1)


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("method.fswag.lr_ratio", "-1"),  # SWAGCollection's bound, for F-SWAG's own section
        ("method.fswag.rho", "-0.1"),  # SAMMethod's bound, through the same subclass
        ("method.fsam.perturb_every", "0"),
        ("method.emcmc.eta", "0"),  # strict
        ("method.ensemble.size", "0"),
        ("method.variance.temperature", "0"),
    ],
)
def test_every_registered_methods_bounds_are_checked(key: str, bad: str) -> None:
    """Each method declares the bounds of its own sections; the configuration checks gather
    them from the registry, whichever method the run trains."""
    from sabma.pipeline.checks import check_config

    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        check_config(config_from_dict({}, [f"{key}={bad}", "method.name=sgd"]))
