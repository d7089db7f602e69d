"""The posterior family: diagonal + low-rank Gaussians over a chosen subset of a network."""

from sabma.posterior.gaussian import GaussianPosterior
from sabma.posterior.lowrank import LowRankGaussian, kl_divergence
from sabma.posterior.subset import NORM_TYPES, find_head, select_parameters

__all__ = [
    "NORM_TYPES",
    "GaussianPosterior",
    "LowRankGaussian",
    "find_head",
    "kl_divergence",
    "select_parameters",
]
