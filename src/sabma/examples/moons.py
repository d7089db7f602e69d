"""Two moons: SA-BMA against plain SGD on a small MLP with LayerNorms, in a few seconds.

The smallest real end-to-end use of the library, through the trainer's own code path: the same
:func:`sabma.training.loop.fit` loop, methods, model selection on a validation split and
configuration defaults as ``sabma train`` (the method's settings — ρ, the natural-gradient
variance, its temperature — are the trainer's defaults); only the data, the network, the prior
N(0, ``prior_std``² I) over every weight and the training budget are the toy's own
(:data:`MOONS_SETTINGS`). SA-BMA is scored by its BMA predictive and its posterior mean; SGD
trains the same network from the same initialisation.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from sabma.config import config_from_dict
from sabma.data.tasks import TrainData
from sabma.methods import get_method
from sabma.metrics import classification_metrics
from sabma.posterior import GaussianPosterior, LowRankGaussian
from sabma.posterior.prior import head_mask
from sabma.predict.dataset import predict_log_probs
from sabma.priors.initial import initial_posterior
from sabma.training import fit

log = logging.getLogger(__name__)

#: the toy's budget and network, as trainer settings (everything else: the defaults)
MOONS_SETTINGS = (
    "model.subset=all",
    "optim.epochs=100",
    "optim.batch_size=25",
    "optim.lr=0.05",
    "optim.warmup_epochs=5",
    "eval.eval_every=10",
    "method.sabma.rank=2",
    "method.swag.rank=2",
    "method.fswag.rank=2",
)
HEAD = "6"  # the last Linear of :func:`moons_mlp`


def make_moons(n: int, noise: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` points of the two interleaved half-circles, with Gaussian noise of std ``noise``."""
    labels = torch.randint(0, 2, (n,), generator=generator)
    angle = torch.rand(n, generator=generator) * math.pi
    upper = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    lower = torch.stack([1 - torch.cos(angle), 0.5 - torch.sin(angle)], dim=1)
    points = torch.where(labels.unsqueeze(1) == 0, upper, lower)
    points = points + noise * torch.randn(n, 2, generator=generator)
    return points - torch.tensor([0.5, 0.25]), labels


def moons_mlp(width: int = 32) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(2, width),
        nn.LayerNorm(width),
        nn.Tanh(),
        nn.Linear(width, width),
        nn.LayerNorm(width),
        nn.Tanh(),
        nn.Linear(width, 2),
    )


@dataclass(frozen=True)
class MoonsConfig:
    n_train: int = 100
    n_val: int = 100
    n_test: int = 2000
    noise: float = 0.3
    prior_std: float = 1.0
    #: ``key.path=value`` settings of the trainer on top of :data:`MOONS_SETTINGS`
    overrides: tuple[str, ...] = field(default_factory=tuple)


def _train(
    method_name: str,
    model: nn.Module,
    data: TrainData,
    settings: list[str],
    prior_std: float,
    seed: int,
) -> GaussianPosterior:
    cfg = config_from_dict({}, [*settings, f"method.name={method_name}", f"seed={seed}"])
    method = get_method(method_name)
    posterior = GaussianPosterior(model, "all", rank=method.rank(cfg), head=HEAD)
    d = posterior.dim
    prior = LowRankGaussian(torch.zeros(d), torch.full((d,), prior_std**2), torch.zeros(d, 0))
    is_head = head_mask(posterior, HEAD)
    start = initial_posterior(cfg, posterior, is_head, HEAD, data, prior)
    method.initialise(posterior, start, is_head, cfg)
    torch.manual_seed(seed)
    fit(posterior, data, cfg, prior, method=method, progress=False)
    return posterior


def run_moons(seed: int = 0, cfg: MoonsConfig | None = None) -> dict[str, dict[str, float]]:
    """Train SGD and SA-BMA on one draw of two moons; test metrics of each predictor.

    Returns ``{"sgd": …, "sabma_bma": …, "sabma_mean": …}``, each ``{"acc","nll","ece","brier"}``.
    """
    cfg = cfg or MoonsConfig()
    gen = torch.Generator().manual_seed(seed)
    x_train, y_train = make_moons(cfg.n_train, cfg.noise, gen)
    x_val, y_val = make_moons(cfg.n_val, cfg.noise, gen)
    x_test, y_test = make_moons(cfg.n_test, cfg.noise, gen)
    data = TrainData(x_train, y_train, x_val, y_val)
    settings = [*MOONS_SETTINGS, *cfg.overrides]
    torch.manual_seed(seed)
    sgd_model = moons_mlp()
    sabma_model = moons_mlp()
    sabma_model.load_state_dict(sgd_model.state_dict())  # the same initialisation

    sgd = _train("sgd", sgd_model, data, settings, cfg.prior_std, seed)
    sabma = _train("sabma", sabma_model, data, settings, cfg.prior_std, seed)
    draws = torch.Generator().manual_seed(seed + 3)
    results = {
        "sgd": predict_log_probs(sgd, x_test, point=True),
        "sabma_bma": predict_log_probs(sabma, x_test, 30, generator=draws),
        "sabma_mean": predict_log_probs(sabma, x_test, point=True),
    }
    metrics = {k: classification_metrics(v.exp(), y_test) for k, v in results.items()}
    log.info("moons seed %d: %s", seed, metrics)
    return metrics
