"""SWAG moments of an SGD run from w_pre on the downstream training split: the ``swag`` prior
(its head replaced by N(0, α I), as for every prior kind) and the ``swag`` initial posterior (the
authors' scheme: SWAG gives the starting σ and D)."""

from __future__ import annotations

import copy

import torch
from torch import Tensor
from torch.nn.functional import cross_entropy

from sabma.config import Config
from sabma.data.tasks import TrainData
from sabma.methods.base import set_network_mode
from sabma.models import inputs
from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian
from sabma.posterior.swag import SWAGMoments, SWAGSchedule


def swag_prior(
    posterior: GaussianPosterior, data: TrainData, cfg: Config, is_head: Tensor, head_var: float
) -> LowRankGaussian:
    """The SWAG Gaussian of :func:`swag_gaussian` with the head's coordinates N(0, α I)
    (α = ``head_var``) and no low-rank part on them: a prior knows nothing of a new head."""
    swag = swag_gaussian(posterior, data, cfg)
    column = is_head.unsqueeze(1)
    return LowRankGaussian(
        torch.where(is_head, torch.zeros_like(swag.mean), swag.mean),
        torch.where(is_head, torch.full_like(swag.var, head_var), swag.var),
        torch.where(column, torch.zeros_like(swag.factor), swag.factor),
    )


def swag_gaussian(posterior: GaussianPosterior, data: TrainData, cfg: Config) -> LowRankGaussian:
    """Run constant-LR SGD (momentum ``optim.momentum``) on a copy of the network over the same
    subset, snapshot the subset after every ``every``-th epoch from ``start`` on, and convert
    the moments (rank ``rank``) — the settings of ``cfg.prior.swag``. The posterior and its
    model are not touched."""
    p = cfg.prior.swag
    schedule = SWAGSchedule(p.start, p.every, p.epochs)
    schedule.check("prior")
    model = copy.deepcopy(posterior.model)
    names = set(posterior.names)
    point = GaussianPosterior(model, lambda n, _p: n in names, rank=0)
    with torch.no_grad():
        point.mean.copy_(posterior.mean)
    optimizer = torch.optim.SGD([point.mean], lr=p.lr, momentum=cfg.optim.momentum)
    moments = SWAGMoments(point.dim, p.rank, point.mean.dtype, point.mean.device)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    set_network_mode(point, cfg.model.bn_mode)
    for epoch in range(1, p.epochs + 1):
        n = inputs.count(data.x_train)
        for idx in torch.randperm(n, generator=gen).split(cfg.optim.batch_size):
            optimizer.zero_grad()
            xb = inputs.to_device(inputs.take(data.x_train, idx), point.device)
            yb = data.y_train[idx].to(point.device)
            cross_entropy(inputs.call(point.mean_forward, xb), yb).backward()
            optimizer.step()
        if schedule.collects(epoch):
            moments.collect(point.mean)
    return moments.to_gaussian(cfg.prior.var_floor)
