"""Priors over the Bayesian subset: isotropic, SWAG (moments and conversion), PTL files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from sabma import GaussianPosterior
from sabma.models.tiny import TinyCNN
from sabma.posterior.prior import head_mask, isotropic_prior
from sabma.posterior.swag import SWAGMoments, swag_to_gaussian
from sabma.priors.pretrained import file_prior


def tiny_posterior(rank: int = 2) -> GaussianPosterior:
    return GaussianPosterior(TinyCNN(4), "norm+head", rank=rank, head="fc")


def test_head_mask_marks_exactly_the_head() -> None:
    posterior = tiny_posterior()
    mask = head_mask(posterior, "fc")
    fc = posterior.model.fc
    assert int(mask.sum()) == fc.weight.numel() + fc.bias.numel()
    assert bool(mask[-1]) and not bool(mask[0])


def test_isotropic_prior_and_initialisation() -> None:
    posterior = tiny_posterior(rank=2)
    is_head = head_mask(posterior, "fc")
    w_pre = posterior.mean.detach().clone()
    prior = isotropic_prior(w_pre, is_head, norm_std=0.1, head_var=0.5)
    torch.testing.assert_close(prior.mean[~is_head], w_pre[~is_head])
    assert torch.all(prior.mean[is_head] == 0) and prior.rank == 0
    torch.testing.assert_close(prior.var, torch.where(is_head, 0.5, 0.01))
    posterior.set_to(prior)
    torch.testing.assert_close(posterior.mean.detach(), prior.mean)
    torch.testing.assert_close(posterior.std.detach() ** 2, prior.var)
    assert torch.all(posterior.factor == 0)
    assert posterior.kl_to(prior).item() == pytest.approx(0.0, abs=1e-3)


def test_swag_moments_equal_a_hand_computation() -> None:
    snapshots = [
        torch.tensor([1.0, 2.0, 0.0]),
        torch.tensor([3.0, 2.0, 1.0]),
        torch.tensor([2.0, 5.0, 2.0]),
    ]
    moments = SWAGMoments(3, rank=2)
    for w in snapshots:
        moments.collect(w)
    stacked = torch.stack(snapshots)
    torch.testing.assert_close(moments.mean, stacked.mean(0))
    torch.testing.assert_close(moments.variance, stacked.var(0, unbiased=False))
    # deviations of the last two snapshots from the running mean at their time
    expected = torch.stack([snapshots[1] - stacked[:2].mean(0), snapshots[2] - stacked.mean(0)], 1)
    torch.testing.assert_close(moments.deviations, expected)


def test_swag_conversion_uses_the_half_and_k_minus_one_convention() -> None:
    mean, var, dev = torch.zeros(4), torch.tensor([0.2, 0.4, 0.6, 0.8]), torch.randn(4, 3)
    g = swag_to_gaussian(mean, var, dev)
    torch.testing.assert_close(g.var, var / 2)
    torch.testing.assert_close(g.factor, dev / math.sqrt(4))
    dense = torch.diag(var) / 2 + dev @ dev.T / (2 * 2)
    torch.testing.assert_close(g.to_torch().covariance_matrix, dense)
    assert swag_to_gaussian(mean, var, dev[:, :1]).rank == 0


def test_file_prior_reads_the_ptl_layout(tmp_path: Path) -> None:
    posterior = tiny_posterior(rank=2)
    model = posterior.model
    body = [(n, p) for n, p in model.named_parameters() if not n.startswith("fc.")]
    total = sum(p.numel() for _, p in body)
    source_head = 7  # the source task's own head at the end, to be ignored
    mean = torch.arange(total + source_head, dtype=torch.float32)
    variance = torch.linspace(0.1, 1.0, total + source_head)
    covmat = torch.randn(3, total + source_head)  # K × D: D̂ᵀ
    for part, value in (("mean", mean), ("variance", variance), ("covmat", covmat)):
        torch.save(value, tmp_path / f"src_{part}.pt")
    prior = file_prior(tmp_path, "src", model, posterior, "fc", head_var=0.3, var_floor=1e-8)
    offsets, start = {}, 0
    for n, p in body:
        offsets[n] = start
        start += p.numel()
    name = "features.1.weight"  # the first BatchNorm's weight
    lo = offsets[name]
    at = posterior.names.index(name)
    begin = sum(posterior.numels[:at])
    size = posterior.numels[at]
    torch.testing.assert_close(prior.mean[begin : begin + size], mean[lo : lo + size])
    torch.testing.assert_close(prior.var[begin : begin + size], variance[lo : lo + size] / 2)
    torch.testing.assert_close(prior.factor[begin : begin + size], covmat.T[lo : lo + size] / 2)
    is_head = head_mask(posterior, "fc")
    assert torch.all(prior.mean[is_head] == 0) and torch.all(prior.var[is_head] == 0.3)
    assert torch.all(prior.factor[is_head] == 0)


def test_file_prior_errors(tmp_path: Path) -> None:
    posterior = tiny_posterior()
    with pytest.raises(FileNotFoundError, match="Pre-Train-Your-Loss layout"):
        file_prior(tmp_path, "none", posterior.model, posterior, "fc", 0.1, 1e-8)
    for part in ("mean", "variance"):
        torch.save(torch.zeros(5), tmp_path / f"small_{part}.pt")
    torch.save(torch.zeros(2, 5), tmp_path / "small_covmat.pt")
    with pytest.raises(ValueError, match="fewer than"):
        file_prior(tmp_path, "small", posterior.model, posterior, "fc", 0.1, 1e-8)


def test_prior_scale_multiplies_the_covariance_except_where_kept() -> None:
    from sabma.pipeline.build import scaled
    from sabma.posterior.lowrank import LowRankGaussian

    prior = LowRankGaussian(torch.zeros(4), torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.randn(4, 2))
    keep = torch.tensor([False, False, True, True])
    out = scaled(prior, 10.0, keep)
    cov, new = prior.to_torch().covariance_matrix, out.to_torch().covariance_matrix
    torch.testing.assert_close(new[:2, :2], 10 * cov[:2, :2])
    torch.testing.assert_close(new[2:, 2:], cov[2:, 2:])
    torch.testing.assert_close(scaled(prior, 3.0).to_torch().covariance_matrix, 3 * cov)
