"""Laplace approximation around the SGD MAP, through the laplace-torch package used as-is.

Training is the ``sgd`` method's. For the predictive, laplace-torch (Daxberger et al., 2021) fits
a Laplace approximation on the training split, with the normalization layers in eval mode:

- ``method.laplace.subset = "last_layer"`` (default): the head only, ``Laplace(...,
  subset_of_weights="last_layer", last_layer_name=<head>)``, Hessian ``method.laplace.hessian``
  (``kron`` by default: KFAC), a scalar prior precision tuned by the marginal likelihood, or
  fixed by ``method.laplace.prior_precision`` (the knob a validation search chooses);
- ``"subset"``: the whole Bayesian subset (laplace-torch's ``subset_of_weights="all"`` with only the
  subset requiring gradients), with the run's prior (its mean and the diagonal of its precision),
  Hessian ``diag`` or ``full``.

The predictive is laplace-torch's GLM predictive with the probit approximation of the softmax.
The Laplace approximation is fitted again from the run's data when a run is re-evaluated (it is
deterministic), so nothing beyond the MAP is stored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sabma.config import Config
from sabma.methods.base import section_types
from sabma.methods.point import SGDMethod
from sabma.models.inputs import Inputs
from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian

SUBSETS = ("last_layer", "subset")
HESSIANS = {"last_layer": ("kron", "diag", "full"), "subset": ("diag", "full")}


def _laplace_factory() -> Any:
    try:
        from laplace import Laplace
    except ImportError:
        raise ValueError(
            "method laplace needs the laplace-torch package: pip install 'sabma[baselines]'"
        ) from None
    return Laplace


@contextmanager
def _only_subset_trainable(posterior: GaussianPosterior) -> Iterator[None]:
    """Make exactly the Bayesian subset require gradients (restored afterwards)."""
    params = dict(posterior.model.named_parameters())
    before = {name: p.requires_grad for name, p in params.items()}
    subset = set(posterior.names)
    try:
        for name, p in params.items():
            p.requires_grad_(name in subset)
        yield
    finally:
        for name, p in params.items():
            p.requires_grad_(before[name])


@dataclass
class LaplaceOptions:
    subset: str = "last_layer"  # last_layer | subset
    hessian: str = "kron"  # kron | diag | full (subset: diag | full)
    # last_layer: the prior precision (0: fitted by marginal likelihood, laplace-torch's way)
    prior_precision: float = 0.0


class _LabelledDataset(torch.utils.data.Dataset[Any]):
    """(x, y) pairs for image tensors; for keyword inputs (texts) one mapping per example with
    the label under ``labels``, as laplace-torch reads Hugging Face style batches."""

    def __init__(self, x: Inputs, y: Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> Any:
        if isinstance(self.x, Mapping):
            return {**{k: v[i] for k, v in self.x.items()}, "labels": self.y[i]}
        return self.x[i], self.y[i]


class LaplaceMethod(SGDMethod):
    name = "laplace"

    @classmethod
    def bounds(cls, cfg: Config) -> list[tuple[str, float, float, bool]]:
        m = cfg.method
        return [
            *super().bounds(cfg),
            ("method.laplace.prior_precision", m.laplace.prior_precision, 0, False),
        ]

    summary = "Laplace (laplace-torch) at the SGD MAP: last-layer KFAC or subset, GLM probit"
    knob = "method.laplace.prior_precision"
    knob_grid = (0.0, 1e3, 1e4)
    sections = section_types(laplace=LaplaceOptions)
    point = False

    def optimizer(
        self, posterior: GaussianPosterior, prior: LowRankGaussian | None, cfg: Config, n: int
    ) -> torch.optim.Optimizer:
        self.check(cfg)
        return super().optimizer(posterior, prior, cfg, n)

    @staticmethod
    def knob_unused(cfg: Config) -> str:
        if cfg.method.laplace.subset != "last_layer":
            return (
                "method.laplace.prior_precision applies to subset=last_layer only; subset=subset "
                "takes its precision from the prior"
            )
        return ""

    @staticmethod
    def check(cfg: Config) -> None:
        subset, hessian = cfg.method.laplace.subset, cfg.method.laplace.hessian
        if subset not in SUBSETS:
            raise ValueError(f"method.laplace.subset must be one of {SUBSETS}, got {subset!r}")
        if hessian not in HESSIANS[subset]:
            raise ValueError(
                f"method.laplace.hessian for subset {subset!r} must be one of "
                f"{HESSIANS[subset]}, got {hessian!r}"
            )
        precision = cfg.method.laplace.prior_precision
        if not precision >= 0:
            raise ValueError(f"method.laplace.prior_precision must be >= 0, got {precision}")
        if precision > 0 and subset != "last_layer":
            raise ValueError(
                "method.laplace.prior_precision applies to subset=last_layer; subset=subset "
                "takes its precision from the prior (prior.kind)"
            )

    def evaluation_needs_prior(self, cfg: Config) -> bool:
        return bool(cfg.method.laplace.subset == "subset")

    def predictive(
        self,
        posterior: GaussianPosterior,
        x_train: Inputs,
        y_train: Tensor,
        prior: LowRankGaussian | None,
        head: str,
        cfg: Config,
    ) -> Callable[[Inputs], Tensor] | None:
        self.check(cfg)
        laplace_cls = _laplace_factory()
        with torch.no_grad():
            posterior.load_into_model()
        model = posterior.model
        model.eval()
        loader = torch.utils.data.DataLoader(
            _LabelledDataset(x_train, y_train), batch_size=cfg.eval.batch_size
        )
        m = cfg.method.laplace
        with _only_subset_trainable(posterior):
            if m.subset == "last_layer":
                la = laplace_cls(
                    model,
                    "classification",
                    subset_of_weights="last_layer",
                    hessian_structure=m.hessian,
                    last_layer_name=head,
                    prior_precision=m.prior_precision or 1.0,
                )
                la.fit(loader, progress_bar=False)
                if m.prior_precision == 0:
                    la.optimize_prior_precision(
                        pred_type="glm", method="marglik", prior_structure="scalar"
                    )
            else:
                if prior is None:
                    raise ValueError("method.laplace.subset=subset needs a prior (prior.kind)")
                precision = 1.0 / (prior.var + prior.factor.pow(2).sum(1))
                la = laplace_cls(
                    model,
                    "classification",
                    subset_of_weights="all",
                    hessian_structure=m.hessian,
                    prior_precision=precision,
                    prior_mean=prior.mean,
                )
                la.fit(loader, progress_bar=False)

        @torch.no_grad()
        def log_probs(x: Inputs) -> Tensor:
            probs = la(x, pred_type="glm", link_approx="probit")
            return torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))

        return log_probs
