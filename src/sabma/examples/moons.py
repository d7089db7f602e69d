"""Two moons: SA-BMA against plain SGD on a small MLP with LayerNorms, in a few seconds.

The smallest real end-to-end use of the library: a Gaussian posterior over every weight of the
MLP, trained with the SA-BMA step on a tempered ELBO (expected NLL + β·KL(q‖N(0, I))/N, β = 0.1),
evaluated by its BMA predictive, its posterior-mean predictor, and a deterministic network of the
same architecture trained with SGD.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.functional import cross_entropy

from sabma.metrics import classification_metrics
from sabma.posterior import GaussianPosterior, LowRankGaussian
from sabma.predict import bma_probs
from sabma.step import SABMA

log = logging.getLogger(__name__)


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
    n_test: int = 2000
    noise: float = 0.3
    epochs: int = 300
    batch_size: int = 25
    lr: float = 0.05
    momentum: float = 0.9
    rho: float = 0.05
    rank: int = 2
    init_std: float = 0.05
    prior_std: float = 1.0
    beta: float = 0.1
    samples: int = 30


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    return list(torch.randperm(n, generator=generator).split(batch_size))


def _train_sgd(
    model: nn.Module, x: Tensor, y: Tensor, cfg: MoonsConfig, generator: torch.Generator
) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs)
    for _ in range(cfg.epochs):
        for idx in _batches(len(x), cfg.batch_size, generator):
            opt.zero_grad()
            cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        schedule.step()


def _train_sabma(
    posterior: GaussianPosterior, x: Tensor, y: Tensor, cfg: MoonsConfig, generator: torch.Generator
) -> None:
    d = posterior.dim
    prior = LowRankGaussian(torch.zeros(d), torch.full((d,), cfg.prior_std**2), torch.zeros(d, 0))
    opt = SABMA(
        posterior,
        lr=cfg.lr,
        momentum=cfg.momentum,
        rho=cfg.rho,
        prior=prior,
        kl_weight=cfg.beta / len(x),
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs)
    for _ in range(cfg.epochs):
        for idx in _batches(len(x), cfg.batch_size, generator):
            opt.zero_grad()

            def closure(idx: Tensor = idx) -> Tensor:
                loss = cross_entropy(posterior(x[idx]), y[idx])
                loss.backward()
                return loss

            opt.step(closure)
        schedule.step()


def run_moons(seed: int = 0, cfg: MoonsConfig | None = None) -> dict[str, dict[str, float]]:
    """Train SGD and SA-BMA on one draw of two moons; test metrics of each predictor.

    Returns ``{"sgd": …, "sabma_bma": …, "sabma_mean": …}``, each ``{"acc","nll","ece","brier"}``.
    """
    cfg = cfg or MoonsConfig()
    gen = torch.Generator().manual_seed(seed)
    x_train, y_train = make_moons(cfg.n_train, cfg.noise, gen)
    x_test, y_test = make_moons(cfg.n_test, cfg.noise, gen)
    torch.manual_seed(seed)
    sgd_model = moons_mlp()
    sabma_model = moons_mlp()
    sabma_model.load_state_dict(sgd_model.state_dict())  # same initialisation

    _train_sgd(sgd_model, x_train, y_train, cfg, gen)
    posterior = GaussianPosterior(sabma_model, "all", rank=cfg.rank, init_std=cfg.init_std)
    _train_sabma(posterior, x_train, y_train, cfg, gen)

    with torch.no_grad():
        sgd_probs = torch.softmax(sgd_model(x_test), dim=1)
        bma = bma_probs(posterior, x_test, samples=cfg.samples, generator=gen)
        mean_probs = torch.softmax(posterior.mean_forward(x_test), dim=1)
    results = {
        "sgd": classification_metrics(sgd_probs, y_test),
        "sabma_bma": classification_metrics(bma, y_test),
        "sabma_mean": classification_metrics(mean_probs, y_test),
    }
    log.info("moons seed %d: %s", seed, results)
    return results
