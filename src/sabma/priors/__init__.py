"""Priors over the Bayesian subset, and where its posterior starts."""
