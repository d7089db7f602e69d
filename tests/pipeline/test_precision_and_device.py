"""The run's device and mixed precision, and the lazy SA-BMA step, through the training loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sabma import LowRankGaussian
from sabma.device import amp_dtype, resolve_device
from sabma.methods import get_method
from sabma.pipeline.build import build_posterior
from sabma.pipeline.train import train_run
from tests.pipeline.test_pipeline import data_root, tiny_config  # noqa: F401 (fixture)


def test_device_and_amp_names_are_checked() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    assert amp_dtype("bf16") is torch.bfloat16 and amp_dtype("none") is None
    with pytest.raises(ValueError, match=r"optim.amp must be one of \['bf16', 'fp16', 'none'\]"):
        amp_dtype("fp8")


def test_bf16_autocast_runs_the_network_in_bf16_and_keeps_theta_in_fp32(
    data_root: Path,  # noqa: F811
) -> None:
    cfg = tiny_config(data_root, "optim.amp=bf16", "device=cpu")
    posterior, _ = build_posterior(cfg, 10)
    seen: list[torch.dtype] = []
    conv = next(m for m in posterior.model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    out = posterior(torch.randn(3, 3, 16, 16))
    assert seen == [torch.bfloat16] and out.dtype == torch.float32
    assert posterior.mean.dtype == torch.float32


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_training_with_autocast_ends_close_to_full_precision(
    tmp_path: Path,
    data_root: Path,  # noqa: F811
    amp: str,
) -> None:
    full = train_run(tiny_config(data_root), tmp_path / "fp32", progress=False)
    mixed = train_run(tiny_config(data_root, f"optim.amp={amp}"), tmp_path / amp, progress=False)
    assert abs(mixed["test"]["bma"]["nll"] - full["test"]["bma"]["nll"]) < 0.1
    log = [
        json.loads(line) for line in (tmp_path / amp / "train_log.jsonl").read_text().splitlines()
    ]
    if amp == "fp16":
        assert all(entry["skipped_steps"] == 0 for entry in log)


@pytest.mark.parametrize("method", ["ivon", "bsam"])
def test_fp16_is_refused_where_the_scaled_step_cannot_drive_the_update(
    tmp_path: Path,
    data_root: Path,  # noqa: F811
    method: str,
) -> None:
    with pytest.raises(
        ValueError, match=rf"optim.amp=fp16 needs loss scaling, which method .{method}."
    ):
        train_run(
            tiny_config(data_root, "optim.amp=fp16", f"method.name={method}"),
            tmp_path / "r",
            progress=False,
        )


@pytest.mark.parametrize(
    "settings",
    [
        ["method.name=vi", "method.variance.kind=gradient"],
        ["method.name=ptl"],
        ["method.name=csgld"],
        ["method.name=emcmc", "method.emcmc.eta=0.1"],
    ],
)
def test_methods_with_their_own_objective_train_under_fp16_loss_scaling(
    tmp_path: Path,
    data_root: Path,  # noqa: F811
    settings: list[str],
) -> None:
    """One step sequence for all: their objectives go through the scaled step like SGD's."""
    metrics = train_run(
        tiny_config(data_root, "optim.amp=fp16", *settings), tmp_path / "r", progress=False
    )
    assert 0 < metrics["test"]["bma"]["nll"] < 10
    log = [
        json.loads(line) for line in (tmp_path / "r" / "train_log.jsonl").read_text().splitlines()
    ]
    assert all(entry["skipped_steps"] == 0 for entry in log)


@pytest.mark.parametrize("method", ["sabma", "sam", "fsam"])
def test_perturb_every_reaches_the_optimiser(data_root: Path, method: str) -> None:  # noqa: F811
    cfg = tiny_config(
        data_root,
        f"method.name={method}",
        f"method.{method}.perturb_every=5",
        "method.variance.curvature=reparam",
    )
    posterior, _ = build_posterior(cfg, 10)
    d = posterior.dim
    prior = LowRankGaussian(posterior.mean.detach().clone(), torch.ones(d), torch.zeros(d, 0))
    optimizer = get_method(method).build_optimizer(posterior, prior, cfg, 50)
    assert optimizer.perturb_every == 5  # type: ignore[attr-defined]
