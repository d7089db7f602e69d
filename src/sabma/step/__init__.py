"""Optimisers: the SA-BMA step, the Fisher geometry it uses, SAM and Fisher SAM."""

from sabma.step.fsam import FSAM
from sabma.step.sabma import SABMA, Metric
from sabma.step.sam import SAM

__all__ = ["FSAM", "SABMA", "SAM", "Metric"]
