"""Prediction: Bayesian model averaging over posterior samples, and temperature scaling."""

from sabma.predict.bma import bma_log_probs, bma_probs
from sabma.predict.dataset import predict_log_probs
from sabma.predict.temperature import apply_temperature, fit_temperature

__all__ = [
    "apply_temperature",
    "bma_log_probs",
    "bma_probs",
    "fit_temperature",
    "predict_log_probs",
]
