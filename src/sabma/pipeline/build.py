"""Building a run's objects from its configuration: the network with its posterior, the prior."""

from __future__ import annotations

import torch
from torch import Tensor

from sabma import distributed
from sabma.config import Config
from sabma.data.tasks import TrainData
from sabma.device import amp_dtype, resolve_device
from sabma.methods import get_method
from sabma.models import build_backbone
from sabma.models.head_scale import head_prior_variance
from sabma.models.lora import add_lora
from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian
from sabma.posterior.prior import head_mask, isotropic_prior
from sabma.priors.pretrained import PRIOR_KINDS, file_prior
from sabma.priors.swag_prior import swag_prior


def build_posterior(cfg: Config, num_classes: int) -> tuple[GaussianPosterior, str]:
    """The backbone with a new head, and the posterior over its Bayesian subset (at w_pre).

    Seeded by ``cfg.seed``, so randomly initialised parts (a new head before the prior resets it,
    a backbone without pre-trained weights) are the same when a run is evaluated again."""
    torch.manual_seed(cfg.seed)
    backbone = build_backbone(
        cfg.model.backbone, num_classes, cfg.model.weights, cfg.model.pretrained
    )
    rank = get_method(cfg.method.name).rank(cfg)
    if rank < 0:
        raise ValueError(
            f"the posterior's rank must be >= 0, got {rank} (method.{cfg.method.name}.rank)"
        )
    if cfg.model.subset == "lora":
        lora = cfg.model.lora
        add_lora(backbone.model, lora.rank, lora.alpha, lora.targets, lora.dropout)
    backbone.model.to(distributed.local_device(resolve_device(cfg.device)))
    posterior = GaussianPosterior(backbone.model, cfg.model.subset, rank=rank, head=backbone.head)
    posterior.autocast_dtype = amp_dtype(cfg.optim.amp)
    return posterior, backbone.head


def build_prior(
    cfg: Config, posterior: GaussianPosterior, head: str, data: TrainData
) -> LowRankGaussian:
    p = cfg.prior
    is_head = head_mask(posterior, head)
    w_pre = posterior.mean.detach().clone()
    alpha = head_prior_variance(p.head_var, posterior, head, data.x_train)
    if p.kind == "isotropic":
        return isotropic_prior(w_pre, is_head, p.norm_std, alpha)
    if not p.scale > 0:
        raise ValueError(f"prior.scale must be > 0, got {p.scale}")
    if p.kind == "swag":
        return scaled(swag_prior(posterior, data, cfg, is_head, alpha), p.scale, keep=is_head)
    if p.kind == "file":
        if not p.file_path:
            raise ValueError("prior.kind=file needs prior.file_path (a folder of PTL-layout files)")
        prior = file_prior(
            p.file_path, p.file_name, posterior.model, posterior, head, alpha, p.var_floor
        )
        return scaled(prior, p.scale, keep=is_head)
    raise ValueError(f"unknown prior kind {p.kind!r}; choose one of {PRIOR_KINDS}")


def scaled(prior: LowRankGaussian, scale: float, keep: Tensor | None = None) -> LowRankGaussian:
    """The prior with its covariance multiplied by ``scale`` (coordinates in ``keep`` unchanged)."""
    factor = torch.ones_like(prior.var) * scale
    if keep is not None:
        factor = torch.where(keep, torch.ones_like(factor), factor)
    return LowRankGaussian(
        prior.mean, prior.var * factor, prior.factor * factor.sqrt().unsqueeze(1)
    )
