"""MC dropout (Gal & Ghahramani, 2016): SGD with dropout on, and dropout on at prediction.

The network's dropout layers are active during training and prediction (normalization layers
keep the configured mode); ``method.mcdropout.p`` sets their rate (None: the model's own). The
predictive averages S stochastic passes at the trained weights (S = ``eval.samples``, or the
evaluation's ``--samples`` / ``--shift-samples``); the validation NLL used for model selection is
that of the deterministic network (dropout off). The run also stores S copies of μ as its weight
set, which the flatness measures read as samples.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from sabma.config import Config
from sabma.methods.base import section_types
from sabma.methods.point import SGDMethod
from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian


def enable_dropout(model: nn.Module, p: float | None) -> None:
    """Switch every dropout layer to training mode (and rate ``p`` if given)."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    if not layers:
        raise ValueError(f"method mcdropout needs dropout layers; {type(model).__name__} has none")
    for layer in layers:
        layer.train()
        if p is not None:
            layer.p = p


@dataclass
class MCDropoutOptions:
    p: float | None = None  # rate of every dropout layer (None: the model's)


class MCDropoutMethod(SGDMethod):
    name = "mcdropout"
    less_noise = "a lower method.mcdropout.p"
    summary = "MC dropout: SGD with dropout, BMA over S stochastic passes (method.mcdropout)"
    knob = "method.mcdropout.p"
    knob_grid = (0.1, 0.4)
    sections = section_types(mcdropout=MCDropoutOptions)
    point = False
    passes_at_mean = True

    @staticmethod
    def check(cfg: Config) -> None:
        p = cfg.method.mcdropout.p
        if p is not None and not 0 <= p < 1:
            raise ValueError(f"method.mcdropout.p must lie in [0, 1), got {p}")

    def __init__(self) -> None:
        self._posterior: GaussianPosterior | None = None
        self._draws = 1

    def setup(
        self, posterior: GaussianPosterior, prior: LowRankGaussian | None, cfg: Config, n: int
    ) -> None:
        self._posterior, self._draws = posterior, cfg.eval.samples

    def train_mode(self, posterior: GaussianPosterior, cfg: Config) -> None:
        super().train_mode(posterior, cfg)
        enable_dropout(posterior.model, cfg.method.mcdropout.p)

    def predict_mode(self, posterior: GaussianPosterior, cfg: Config) -> None:
        super().predict_mode(posterior, cfg)
        enable_dropout(posterior.model, cfg.method.mcdropout.p)

    def samples(self) -> Tensor | None:
        if self._posterior is None:
            return None
        return self._posterior.mean.detach().expand(self._draws, -1).clone()
