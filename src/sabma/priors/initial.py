"""The posterior before training, chosen apart from the prior (docs/method.md §3).

The mean always starts at the pre-trained weights w_pre off the head and at 0 on the new head;
``init.kind`` says where the starting σ and D come from:

* ``fixed``: σ = ``init.norm_std`` on the normalization (and other non-head) parameters,
  ``init.head_std`` on the head, D = 0;
* ``prior``: the prior's variances and factor off the head (× ``init.scale``), ``init.head_std``
  on the head — the first implementation's behaviour, where a wide prior meant a wide start;
* ``swag``: the SWAG moments of an SGD run from w_pre on the training split, head included
  (the authors' scheme: SWAG gives the initial σ and D; ``prior.swag`` settings), × scale;
* ``file``: the Pre-Train-Your-Loss moments of ``prior.file_path`` off the head, × scale.

With the natural-gradient variance the starting σ only matters until the first curvature
estimate (a ``fisher`` refresh after the first update, or the first ``reparam`` steps).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sabma.config import Config
from sabma.data.tasks import TrainData
from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian
from sabma.priors.pretrained import file_prior
from sabma.priors.swag_prior import swag_gaussian

INIT_KINDS = ("fixed", "prior", "swag", "file")


def initial_posterior(
    cfg: Config,
    posterior: GaussianPosterior,
    is_head: Tensor,
    head: str,
    data: TrainData,
    prior: LowRankGaussian | None,
) -> LowRankGaussian:
    """The starting Gaussian over the subset (rank ≤ the posterior's), from ``cfg.init``."""
    i = cfg.init
    if not i.norm_std > 0 or not i.head_std > 0 or not i.scale > 0:
        raise ValueError(
            f"init.norm_std, init.head_std and init.scale must be > 0, got "
            f"{i.norm_std}, {i.head_std}, {i.scale}"
        )
    w_pre = posterior.mean.detach().clone()
    mean = torch.where(is_head, torch.zeros_like(w_pre), w_pre)
    head_var = torch.full_like(w_pre, i.head_std**2)
    if i.kind == "fixed":
        var = torch.where(is_head, head_var, torch.full_like(w_pre, i.norm_std**2))
        return LowRankGaussian(mean, var, w_pre.new_zeros(w_pre.numel(), 0))
    if i.kind == "prior":
        if prior is None:
            raise ValueError("init.kind=prior needs a prior")
        source, keep_head = prior, False
    elif i.kind == "swag":
        source, keep_head = swag_gaussian(posterior, data, cfg), True
    elif i.kind == "file":
        p = cfg.prior
        if not p.file_path:
            raise ValueError("init.kind=file needs prior.file_path (a folder of PTL-layout files)")
        source = file_prior(
            p.file_path, p.file_name, posterior.model, posterior, head, 1.0, p.var_floor
        )
        keep_head = False
    else:
        raise ValueError(f"unknown init kind {i.kind!r}; choose one of {INIT_KINDS}")
    k = min(posterior.rank, source.rank)
    var, factor = source.var * i.scale, source.factor[:, :k] * i.scale**0.5
    if not keep_head:
        var = torch.where(is_head, head_var, var)
        factor = torch.where(is_head.unsqueeze(1), torch.zeros_like(factor), factor)
    return LowRankGaussian(mean, var.to(w_pre), factor.to(w_pre))
