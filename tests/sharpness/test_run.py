"""``sabma sharpness`` on tiny runs: the metrics.json section, failures, the benchmark table."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from sabma import GaussianPosterior
from sabma.cli.main import main
from sabma.config import Config, config_from_dict
from sabma.experiments.benchmark import run_benchmark
from sabma.methods import get_method
from sabma.pipeline.evaluate import LoadedRun, evaluate_run, load_run
from sabma.pipeline.train import train_run
from sabma.sharpness.hessian import hvp_fn
from sabma.sharpness.run import (
    SharpnessOptions,
    is_gaussian,
    posterior_samples,
    sharpness_run,
    training_batches,
)
from tests.conftest import mlp
from tests.data.helpers import write_fake_fashion_mnist
from tests.pipeline.test_pipeline import TINY


def test_sharpness_section_of_a_gaussian_run(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_fake_fashion_mnist(root)
    run = tmp_path / "run"
    train_run(config_from_dict({}, [*TINY, f"data.root={root}", "method.name=vi"]), run, False)
    options = SharpnessOptions(top_k=3, samples=2, probes=4, images=20, batch_size=10)
    result = sharpness_run(run, options, progress=False)
    assert result["samples"] == 2 and result["images"] == 20 and not result["failed"]
    for sample in result["per_sample"]:
        values = sample["eigenvalues"]
        assert len(values) == 3 and values == sorted(values, reverse=True)
    lam = [s["eigenvalues"][0] for s in result["per_sample"]]
    assert result["lambda_max"] == pytest.approx(sum(lam) / 2)
    assert lam[0] != lam[1]  # two different posterior samples
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["sharpness"] == json.loads(json.dumps(result))
    assert "## Sharpness" in (run / "report.md").read_text()
    assert "sharpness" in evaluate_run(run, progress=False)  # kept by a re-evaluation
    assert "## Sharpness" in (run / "report.md").read_text()

    # at the mean: the same measures at μ, which no sample equals
    centred = sharpness_run(run, replace(options, at_mean=True), progress=False)
    unchanged = [{k: v for k, v in s.items() if k != "seconds"} for s in centred["per_sample"]]
    assert unchanged == [
        {k: v for k, v in s.items() if k != "seconds"} for s in result["per_sample"]
    ]
    at_mean = centred["at_mean"]
    assert centred["mean_lambda_max"] == at_mean["eigenvalues"][0] not in lam
    run_state = load_run(run)
    run_state.posterior.eval()
    hvp = hvp_fn(
        run_state.posterior, training_batches(run_state, options), run_state.posterior.mean
    )
    probe = torch.randn(run_state.posterior.dim, generator=torch.Generator().manual_seed(0))
    rayleigh = float(probe @ hvp(probe) / probe.dot(probe))
    assert rayleigh <= centred["mean_lambda_max"] * (1 + 1e-3)  # λ_max bounds every Rayleigh
    assert "At the posterior mean: λ_max" in (run / "report.md").read_text()

    failing = sharpness_run(
        run, SharpnessOptions(top_k=3, samples=1, probes=2, max_matvecs=2), False
    )
    assert failing["lambda_max"] is None and failing["failed"][0]["sample"] == 0
    assert "no convergence" in failing["failed"][0]["error"]


def test_benchmark_folder_table(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_fake_fashion_mnist(root)
    bench = tmp_path / "bench"
    run_benchmark(
        None,
        ["sgd", "swag"],
        [0],
        bench,
        [*TINY, f"data.root={root}", "method.swag.start=2"],
        progress=False,
    )
    args = [
        "sharpness",
        str(bench),
        "--top-k",
        "2",
        "--samples",
        "2",
        "--probes",
        "2",
        "--images",
        "10",
    ]
    assert main([*args, "--no-progress"]) == 0
    table = (bench / "sharpness.md").read_text()
    assert "| sgd | 0 |" in table and "| swag | 0 |" in table and "LAMBDA_MAX" in table
    assert "| method | seeds |" in table  # which seeds each row covers
    assert "## Sharpness at posterior samples" in (bench / "report.md").read_text()
    sgd = json.loads((bench / "sgd" / "seed0" / "metrics.json").read_text())["sharpness"]
    assert sgd["samples"] == 1  # a point estimate: its mean only
    # --missing: every run has its section, so nothing is measured again
    swag = (bench / "swag" / "seed0" / "metrics.json").read_bytes()
    assert main([*args, "--missing", "--no-progress"]) == 0
    assert (bench / "swag" / "seed0" / "metrics.json").read_bytes() == swag


def test_sample_sets_without_spread_are_measured_once() -> None:
    """MC dropout's weight set is S copies of the mean (its randomness is in the masks)."""
    posterior = GaussianPosterior(mlp(), "all")
    copies = posterior.mean.detach().expand(4, -1).clone()
    run = LoadedRun(Config(), None, posterior, "3", get_method("mcdropout"), None, copies)  # type: ignore[arg-type]
    assert posterior_samples(run, 3, 0).shape == (1, posterior.dim)
    spread = copies + torch.randn_like(copies)
    run = LoadedRun(Config(), None, posterior, "3", get_method("ensemble"), None, spread)  # type: ignore[arg-type]
    assert torch.equal(posterior_samples(run, 3, 0), spread[:3])
    # only a Gaussian posterior has a centre the samples spread around (--at-mean)
    assert not is_gaussian(run)
    for name, gaussian in (("sgd", False), ("laplace", False), ("vi", True), ("sabma", True)):
        plain = LoadedRun(Config(), None, posterior, "3", get_method(name), None, None)  # type: ignore[arg-type]
        assert is_gaussian(plain) == gaussian
