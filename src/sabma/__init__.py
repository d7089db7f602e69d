"""sabma: sharpness-aware Bayesian model averaging and Bayesian transfer learning for PyTorch.

The public names are imported on first use (PEP 562), so that ``import sabma`` — and the
command line's argument parsing, lock checks and error messages — do not wait for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name → the module that defines it
_LAZY = {
    "SABMA": "sabma.step",
    "SAM": "sabma.step",
    "GaussianPosterior": "sabma.posterior",
    "LowRankGaussian": "sabma.posterior",
    "NaturalVariance": "sabma.variance",
    "bma": "sabma.predict.dataset",
    "kl_divergence": "sabma.posterior",
    "select_parameters": "sabma.posterior",
}

__all__ = [
    "SABMA",
    "SAM",
    "GaussianPosterior",
    "LowRankGaussian",
    "NaturalVariance",
    "__version__",
    "bma",
    "kl_divergence",
    "predict",
    "select_parameters",
]

if TYPE_CHECKING:
    from sabma import predict
    from sabma.posterior import (
        GaussianPosterior,
        LowRankGaussian,
        kl_divergence,
        select_parameters,
    )
    from sabma.predict.dataset import bma
    from sabma.step import SABMA, SAM
    from sabma.variance import NaturalVariance


def __getattr__(name: str) -> Any:
    if name == "predict":
        return importlib.import_module("sabma.predict")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sabma' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
