"""Priors over the Bayesian subset (method.md §5), all as :class:`LowRankGaussian` in subset order.

* ``isotropic``: N(w_pre, τ² I) on the normalization parameters, N(0, α I) on the new head.
* ``swag``: SWAG moments of an SGD run from w_pre on the downstream training split (the head
  included), converted with σ² = v/2, D = D̂/√(2(K−1)).
* ``file``: SWAG moments from pre-training on a source task, in the Pre-Train-Your-Loss layout
  ``<name>_mean.pt``, ``<name>_variance.pt``, ``<name>_covmat.pt`` (covmat holds D̂ᵀ, K×d). The flat
  vectors follow ``named_parameters()`` order of the pre-trained network *without* its head; a
  longer vector is taken to end with the source task's head, which is ignored. The new head gets
  N(0, α I) with no low-rank part.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor, nn

from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian
from sabma.posterior.swag import swag_to_gaussian

log = logging.getLogger(__name__)

PRIOR_KINDS = ("isotropic", "swag", "file")


def load_ptl_moments(folder: str | Path, name: str) -> tuple[Tensor, Tensor, Tensor]:
    """(mean (D,), variance (D,), covmat (K, D)) from ``<name>_{mean,variance,covmat}.pt``,
    loaded with ``weights_only=True`` (no code runs)."""
    folder = Path(folder)
    out = []
    for part in ("mean", "variance", "covmat"):
        file = folder / f"{name}_{part}.pt"
        if not file.is_file():
            raise FileNotFoundError(
                f"prior file {file} does not exist (Pre-Train-Your-Loss layout: "
                f"{name}_mean.pt, {name}_variance.pt, {name}_covmat.pt)"
            )
        value = torch.load(file, map_location="cpu", weights_only=True)
        if not isinstance(value, Tensor):
            raise ValueError(f"prior file {file} does not hold a tensor")
        out.append(value.float())
    mean, variance, covmat = (t.reshape(-1) if i < 2 else t for i, t in enumerate(out))
    if covmat.dim() == 1:
        covmat = covmat.unsqueeze(0)
    if variance.shape != mean.shape or covmat.dim() != 2 or covmat.shape[1] != mean.numel():
        raise ValueError(
            f"prior files in {folder} disagree: mean {tuple(mean.shape)}, variance "
            f"{tuple(variance.shape)}, covmat {tuple(covmat.shape)} (expected K×{mean.numel()})"
        )
    return mean, variance, covmat


def file_prior(
    folder: str | Path,
    name: str,
    model: nn.Module,
    posterior: GaussianPosterior,
    head: str,
    head_var: float,
    var_floor: float,
) -> LowRankGaussian:
    """The prior over the subset from PTL-layout SWAG moments (see the module docstring)."""
    mean, variance, covmat = load_ptl_moments(folder, name)
    prefix = f"{head}."
    layout = [(n, p.numel()) for n, p in model.named_parameters() if not n.startswith(prefix)]
    body = sum(n for _, n in layout)
    if mean.numel() < body:
        raise ValueError(
            f"prior files hold {mean.numel()} values, fewer than the {body} parameters "
            f"of {type(model).__name__} without its head"
        )
    if mean.numel() > body:
        log.info(
            "prior files hold %d values beyond the backbone's %d: taken as the source head "
            "and ignored",
            mean.numel() - body,
            body,
        )
    offsets, start = {}, 0
    for n, size in layout:
        offsets[n] = (start, size)
        start += size
    source = swag_to_gaussian(mean, variance, covmat.T, var_floor)
    pieces_mean, pieces_var, pieces_factor = [], [], []
    for n, size in zip(posterior.names, posterior.numels, strict=True):
        if n.startswith(prefix):
            pieces_mean.append(torch.zeros(size))
            pieces_var.append(torch.full((size,), head_var))
            pieces_factor.append(torch.zeros(size, source.rank))
        else:
            lo, count = offsets[n]
            pieces_mean.append(source.mean[lo : lo + count])
            pieces_var.append(source.var[lo : lo + count])
            pieces_factor.append(source.factor[lo : lo + count])
    like = posterior.mean
    return LowRankGaussian(
        torch.cat(pieces_mean).to(like),
        torch.cat(pieces_var).to(like),
        torch.cat(pieces_factor).to(like),
    )
