"""The Bayesian transfer-learning scheme: priors from pre-trained weights, training, prediction."""
