"""Optimisers: the SA-BMA step, the Fisher geometry it uses, SAM and Fisher SAM."""

from sabma.step.fsam import FSAM
from sabma.step.kl_ball import Metric
from sabma.step.sabma import SABMA
from sabma.step.sam import SAM

__all__ = ["FSAM", "SABMA", "SAM", "Metric"]
