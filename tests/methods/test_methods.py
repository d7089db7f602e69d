"""The method registry and each method's defining property."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from sabma import GaussianPosterior
from sabma.cli.main import main
from sabma.config import config_from_dict
from sabma.methods import METHODS, get_method
from sabma.step.sam import SAM
from sabma.transfer.pipeline import train_run
from tests.conftest import mlp
from tests.data.helpers import write_fake_fashion_mnist
from tests.transfer.test_pipeline import TINY


def test_registry_names_and_listing(capsys: pytest.CaptureFixture[str]) -> None:
    assert {"sgd", "sam", "sabma", "swag", "fswag"} <= set(METHODS)
    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(METHODS)
    assert any(line.startswith("swag ") and "Bayesian" in line for line in lines)
    with pytest.raises(ValueError, match=r"unknown method 'nope'; choose one of \["):
        get_method("nope")
    assert get_method("swag") is not get_method("swag")  # fresh state per run


def test_swag_method_forms_the_gaussian_of_the_collected_snapshots() -> None:
    """Snapshots after epochs ≥ swag_start (every 2nd): mean, ½ variance, D̂/√(2(K−1))."""
    cfg = config_from_dict(
        {},
        [
            "method.name=swag",
            "method.rank=2",
            "method.swag_start=2",
            "method.swag_every=2",
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
    cfg = config_from_dict({}, ["method.name=swag", "method.swag_start=99", "optim.epochs=5"])
    with pytest.raises(ValueError, match="collected no snapshot"):
        get_method("swag").finish(GaussianPosterior(mlp(), "all", rank=1), cfg)


def test_sam_family_uses_the_euclidean_sam_radius() -> None:
    cfg = config_from_dict({}, ["method.sam_rho=0.07"])
    posterior = GaussianPosterior(mlp(), "all")
    for name in ("sam", "fswag"):
        opt = get_method(name).optimizer(posterior, None, cfg, n=10)
        assert isinstance(opt, SAM) and opt.rho == 0.07


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_end_to_end(tmp_path: Path, name: str) -> None:
    root = tmp_path / "data"
    write_fake_fashion_mnist(root)
    cfg = config_from_dict(
        {}, [*TINY, f"data.root={root}", f"method.name={name}", "method.swag_start=2"]
    )
    metrics = train_run(cfg, tmp_path / "run", progress=False)
    method = METHODS[name]
    assert metrics["samples"] == (1 if method.point else cfg.eval.samples)
    assert math.isfinite(metrics["test"]["bma"]["nll"])
