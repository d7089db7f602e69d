"""sabma: sharpness-aware Bayesian model averaging and Bayesian transfer learning for PyTorch."""

from sabma import predict
from sabma.posterior import GaussianPosterior, LowRankGaussian, kl_divergence, select_parameters
from sabma.predict.dataset import bma
from sabma.step import SABMA, SAM
from sabma.variance import NaturalVariance

__version__ = "0.1.0"

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
