"""What the drop-in ``SABMA(model, data=train_loader, lr=…)`` fills in, from the trainer's
defaults (:mod:`sabma.config`, the settings docs/results.md measured): the posterior over the
model's Bayesian subset, the isotropic prior N(w_pre, τ² I) / N(0, α I) on the head, and the base
optimiser's learning rate and momentum.

The posterior starts at the weights the model holds (its mean) with σ = ``init.norm_std`` off the
head and ``init.head_std`` on it, D = 0; the prior is centred on those same starting weights. α,
the head's prior variance, is automatic from ``data``: HEAD_LOGIT_VAR / E‖φ(x)‖² over at most
:data:`FEATURE_EXAMPLES` inputs (each logit's prior std about 7), or 1 without data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from sabma.config.sections import InitConfig, ModelConfig, OptimConfig, PriorConfig
from sabma.models.head_scale import head_prior_variance
from sabma.models.inputs import Inputs, call, input_batches, to_device
from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian
from sabma.posterior.prior import head_mask, isotropic_prior
from sabma.posterior.subset import Subset, find_head
from sabma.step.options import SABMAOptions

#: inputs read from ``data`` for the automatic head prior (and to check that the model runs on
#: the loader's batches before training starts)
FEATURE_EXAMPLES = 256

#: the head prior's variance when there is no data to set it from
HEAD_VAR_WITHOUT_DATA = 1.0


def posterior_of(
    model: nn.Module,
    subset: Subset | None,
    rank: int | None,
    head: str | nn.Module | None,
    init_std: float | None,
) -> GaussianPosterior:
    """The posterior over ``model``'s subset, its mean at the model's weights, for training in
    place (the subset's own tensors receive the samples and the gradients)."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"SABMA takes your model (an nn.Module) or a GaussianPosterior, not "
            f"{type(model).__name__} (pass the model itself, not model.parameters())"
        )
    init = InitConfig()
    posterior = GaussianPosterior(
        model,
        ModelConfig.subset if subset is None else subset,
        rank=SABMAOptions.rank if rank is None else rank,
        init_std=init.norm_std if init_std is None else init_std,
        head=head,
    )
    head_name = _head_name(posterior, head)
    if init_std is None and head_name is not None:  # the head's own initial σ
        with torch.no_grad():
            posterior.log_std[head_mask(posterior, head_name)] = math.log(init.head_std)
    posterior.enable_model_gradients()
    return posterior


def default_prior(
    posterior: GaussianPosterior,
    data: Inputs | Iterable[Any] | None,
    head: str | nn.Module | None,
    prior_std: float | None,
    head_prior_var: float | None,
) -> LowRankGaussian:
    """N(w_now, τ² I) off the head, N(0, α I) on it (``prior.norm_std``, ``prior.head_var``)."""
    tau = PriorConfig.norm_std if prior_std is None else prior_std
    head_name = _head_name(posterior, head)
    w_now = posterior.mean.detach().clone()
    if head_name is None:  # a subset without the head: the isotropic prior on all of it
        return isotropic_prior(w_now, torch.zeros_like(w_now, dtype=torch.bool), tau, 1.0)
    if head_prior_var is None:
        head_prior_var = PriorConfig.head_var
    if head_prior_var == 0 and data is None:
        head_prior_var = HEAD_VAR_WITHOUT_DATA
    source = data if data is not None else []
    alpha = head_prior_variance(head_prior_var, posterior, head_name, source, FEATURE_EXAMPLES)
    return isotropic_prior(w_now, head_mask(posterior, head_name), tau, alpha)


def check_runs_on(posterior: GaussianPosterior, data: Inputs | Iterable[Any]) -> None:
    """One clear line when the model cannot run on the first batch of ``data``."""
    try:
        first = next(iter(input_batches(data, 2, 2)), None)
        if first is None:
            raise ValueError("data= yields no batches (an empty loader?)")
        with torch.no_grad():
            call(posterior.mean_forward, to_device(first, posterior.device))
    except (TypeError, RuntimeError, ValueError, IndexError, KeyError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"the model does not run on a batch of data=: {message}") from None


def base_defaults(base: type[torch.optim.Optimizer], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The trainer's ``optim.lr`` and, for SGD, ``optim.momentum`` where not given."""
    out = {"lr": OptimConfig.lr, **kwargs}
    if base is torch.optim.SGD:
        out.setdefault("momentum", OptimConfig.momentum)
    return out


def _head_name(posterior: GaussianPosterior, head: str | nn.Module | None) -> str | None:
    """The head module's name when the subset holds its parameters, else None."""
    try:
        name, _ = find_head(posterior.model, head)
    except (ValueError, TypeError):
        return None
    return name if any(n.startswith(f"{name}.") for n in posterior.names) else None
