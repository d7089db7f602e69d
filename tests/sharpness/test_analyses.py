"""Flat-vs-sharp BMA and loss-landscape slices: orderings, normalisation, curvature."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sabma import GaussianPosterior
from sabma.cli.main import main
from sabma.config import config_from_dict
from sabma.metrics import classification_metrics
from sabma.pipeline.evaluate import load_run
from sabma.pipeline.train import train_run
from sabma.sharpness.flatness import _sample_probs, flat_vs_sharp
from sabma.sharpness.landscape import filter_normalised, slices
from sabma.sharpness.run import SharpnessOptions
from tests.conftest import TinyResNet, mlp
from tests.data.helpers import write_fake_fashion_mnist
from tests.pipeline.test_pipeline import TINY


@pytest.fixture(scope="module")
def vi_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("vi")
    write_fake_fashion_mnist(tmp / "data")
    cfg = config_from_dict({}, [*TINY, f"data.root={tmp / 'data'}", "method.name=vi"])
    train_run(cfg, tmp / "run", progress=False)
    return tmp / "run"


def test_flat_first_starts_at_the_flattest_sample_and_all_orders_meet(vi_run: Path) -> None:
    run = load_run(vi_run)
    options = SharpnessOptions(images=20, batch_size=10)
    result = flat_vs_sharp(run, 4, options, repeats=3)
    lam = result["lambda_max"]
    assert len(lam) == 4 and result["m"] == [1, 2, 3, 4] and not result["failed"]
    generator = torch.Generator().manual_seed(options.seed)
    weights = run.posterior.sample_weights(4, generator).detach()
    probs = _sample_probs(run, weights)
    flattest, sharpest = min(range(4), key=lam.__getitem__), max(range(4), key=lam.__getitem__)
    y = run.task.y_test
    assert result["curves"]["flat"][0] == classification_metrics(probs[flattest], y)
    assert result["curves"]["sharp"][0] == classification_metrics(probs[sharpest], y)
    everything = classification_metrics(probs.mean(0), y)
    for order in ("flat", "random", "sharp"):
        assert result["curves"][order][-1]["nll"] == pytest.approx(everything["nll"])


def test_flatness_command_writes_its_files(vi_run: Path) -> None:
    assert (
        main(
            [
                "analyze",
                "flatness",
                str(vi_run),
                "--samples",
                "3",
                "--images",
                "20",
                "--no-progress",
            ]
        )
        == 0
    )
    saved = json.loads((vi_run / "flatness.json").read_text())
    assert len(saved["lambda_max"]) == 3 and (vi_run / "flatness.png").stat().st_size > 1000
    assert "![Flat-vs-sharp BMA](flatness.png)" in (vi_run / "report.md").read_text()
    assert (
        main(
            [
                "analyze",
                "landscape",
                str(vi_run),
                "--points",
                "3",
                "--grid",
                "3",
                "--images",
                "10",
                "--no-progress",
            ]
        )
        == 0
    )
    assert "![Loss landscape](landscape.png)" in (vi_run / "report.md").read_text()


def test_filter_normalised_directions_match_the_weight_norms() -> None:
    posterior = GaussianPosterior(TinyResNet(), "all")
    w = posterior.mean.detach() + 0.1
    d = filter_normalised(posterior, w, torch.Generator().manual_seed(0))
    for name, part in posterior.unflatten(d).items():
        ref = posterior.unflatten(w)[name]
        if part.dim() >= 2:
            torch.testing.assert_close(part.flatten(1).norm(dim=1), ref.flatten(1).norm(dim=1))
        else:
            torch.testing.assert_close(part.norm(), ref.norm())


def test_slices_pass_through_the_mean_with_the_top_curvature() -> None:
    """At α = 0 every slice is L(μ); along the top eigenvector d = v·‖μ‖ the second difference
    is λ_max·‖μ‖² (a quadratic fit over a small span)."""
    torch.manual_seed(0)
    posterior = GaussianPosterior(mlp(width=6).double(), "all")
    batches = [(torch.randn(16, 2).double(), torch.randint(0, 3, (16,)))]
    posterior.eval()
    result = slices(posterior, batches, SharpnessOptions(tol=1e-10), span=1e-3, points=5, grid=3)
    centre = result["alphas"].index(0.0)
    values = {name: v[centre] for name, v in result["one_d"].items()}
    assert len(set(round(v, 12) for v in values.values())) == 1
    curve = result["one_d"]["eigen 1"]
    h = result["alphas"][1] - result["alphas"][0]
    second = (curve[centre + 1] - 2 * curve[centre] + curve[centre - 1]) / h**2
    expected = result["eigenvalues"][0] * float(posterior.mean.norm()) ** 2
    assert second == pytest.approx(expected, rel=1e-3)
    assert set(result["two_d"]) == {"random", "eigen"}
    assert len(result["two_d"]["eigen"]) == 3
