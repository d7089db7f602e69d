"""Optimisers: the SA-BMA step, the Fisher geometry it uses, and SAM."""

from sabma.step.sabma import SABMA, Metric
from sabma.step.sam import SAM

__all__ = ["SABMA", "SAM", "Metric"]
