"""The posterior's variance learned from curvature: the natural-gradient rule (VON/IVON), the
sampled-label Fisher of the training inputs, and the low-rank factor it implies."""

from sabma.variance.factor import residual_factor
from sabma.variance.fisher_gradients import sampled_fisher_gradients
from sabma.variance.natural import Curvature, NaturalVariance, Source
from sabma.variance.rules import ivon_update, natural_variance, reparam_hessian

__all__ = [
    "Curvature",
    "NaturalVariance",
    "Source",
    "ivon_update",
    "natural_variance",
    "reparam_hessian",
    "residual_factor",
    "sampled_fisher_gradients",
]
