"""sabma: sharpness-aware Bayesian model averaging and Bayesian transfer learning for PyTorch."""

from sabma.posterior import GaussianPosterior, LowRankGaussian, kl_divergence, select_parameters
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
    "kl_divergence",
    "select_parameters",
]
