"""The initial posterior is chosen apart from the prior; every prior puts N(0, α) on the head."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from sabma.data.tasks import load_task
from sabma.pipeline.build import build_posterior, build_prior
from sabma.posterior.prior import head_mask
from sabma.priors.initial import initial_posterior
from sabma.priors.swag_prior import swag_gaussian
from tests.pipeline.test_pipeline import data_root, tiny_config, write_ptl_prior  # noqa: F401

SWAG = ["prior.swag.epochs=4", "prior.swag.start=1", "prior.swag.rank=3"]


def start(root: Path, *extra: str):
    cfg = tiny_config(root, *extra)
    task = load_task(cfg, cfg.seed)
    data = task.train_data()
    posterior, head = build_posterior(cfg, task.num_classes)
    is_head = head_mask(posterior, head)
    prior = build_prior(cfg, posterior, head, data)
    return (
        cfg,
        posterior,
        is_head,
        prior,
        initial_posterior(cfg, posterior, is_head, head, data, prior),
        data,
    )


def test_a_wide_prior_leaves_the_initial_posterior_unchanged(data_root: Path) -> None:  # noqa: F811
    *_, narrow, _ = start(data_root, "prior.norm_std=0.01")
    _, _, is_head, prior, wide, _ = start(data_root, "prior.norm_std=1")
    assert torch.allclose(prior.var[~is_head], torch.ones(int((~is_head).sum())))
    torch.testing.assert_close(wide.var, narrow.var)
    torch.testing.assert_close(wide.var[~is_head], torch.full_like(wide.var[~is_head], 1e-4))
    torch.testing.assert_close(wide.var[is_head], torch.full_like(wide.var[is_head], 1e-4))
    # the old behaviour is one setting: the posterior starts at the prior
    *_, at_prior, _ = start(data_root, "prior.norm_std=1", "init.kind=prior")
    torch.testing.assert_close(at_prior.var[~is_head], prior.var[~is_head])


def test_swag_initialisation_takes_sigma_and_factor_from_the_swag_run(data_root: Path) -> None:  # noqa: F811
    cfg, posterior, is_head, _, init, data = start(
        data_root, "init.kind=swag", "init.scale=2", *SWAG
    )
    # the same seeded run; its conversion σ² = v/2, D = D̂/√(2(K−1)) is tested in test_priors
    swag = swag_gaussian(posterior, data, cfg)
    assert swag.rank == 3 and float(swag.factor.abs().sum()) > 0
    torch.testing.assert_close(init.var, 2 * swag.var)  # head included
    torch.testing.assert_close(init.factor, math.sqrt(2) * swag.factor[:, : posterior.rank])
    # the mean starts at w_pre (head at 0), not at SWAG's mean
    assert torch.all(init.mean[is_head] == 0)
    torch.testing.assert_close(init.mean[~is_head], posterior.mean.detach()[~is_head])


@pytest.mark.parametrize("kind", ["isotropic", "swag", "file"])
def test_the_head_prior_is_n0_alpha_for_every_kind(
    tmp_path: Path,
    data_root: Path,  # noqa: F811
    kind: str,
) -> None:
    extra = [*SWAG, "prior.head_var=0.25"]
    if kind == "file":
        write_ptl_prior(tmp_path, data_root, mean=1.0, variance=1e-3)
        extra += [f"prior.file_path={tmp_path}", "prior.file_name=p"]
    *_, is_head, prior, _, _ = start(data_root, f"prior.kind={kind}", *extra)
    assert torch.all(prior.mean[is_head] == 0)
    torch.testing.assert_close(prior.var[is_head], torch.full_like(prior.var[is_head], 0.25))
    assert torch.all(prior.factor[is_head] == 0)
    assert not torch.all(prior.var[~is_head] == 0.25)  # the rest is the kind's own


def test_bad_init_settings_are_refused(data_root: Path) -> None:  # noqa: F811
    with pytest.raises(ValueError, match=r"init\.kind=file needs prior\.file_path"):
        start(data_root, "init.kind=file")
    with pytest.raises(ValueError, match="unknown init kind"):
        start(data_root, "init.kind=nope")
