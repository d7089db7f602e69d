"""Prediction: Bayesian model averaging over posterior samples."""

from sabma.predict.bma import bma_log_probs, bma_probs

__all__ = ["bma_log_probs", "bma_probs"]
