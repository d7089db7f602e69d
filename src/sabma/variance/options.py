"""The settings of the learned variance of SA-BMA and VI: the configuration's shared
``method.variance`` section, and the defaults of :class:`sabma.variance.natural.NaturalVariance`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class VarianceOptions:
    """How SA-BMA and VI learn σ and D."""

    # natural (σ² = T/(λ(h+δ)) from a curvature h, D from the Fisher; a tempered posterior) |
    # gradient (SGD on log σ and D, the research code's path)
    kind: str = "natural"
    temperature: float = 0.001  # natural: T (1: the posterior, < 1: a cold posterior)
    ess: float = 0.0  # natural: λ, the effective sample size (0: the number of training examples)
    curvature: str = "fisher"  # natural: fisher (sampled-label Fisher, training set) | reparam
    curvature_source: str = "perturbed"  # reparam: the pass that feeds h: clean | perturbed
    curvature_beta2: float = 0.99  # reparam: h averaged at rate 1 − β₂ per step
    # fisher: epochs between refreshes of h and D (the first comes after the first update); 16
    # was chosen on validation from {1, 4, 8, 16, 32} (docs/speed.md)
    refresh_epochs: int = 16
    fisher_samples: int = 1  # fisher: label draws per training example
    fisher_examples: int = 256  # fisher: at most this many examples per refresh (seeded subset)
    beta: float = 0.0  # gradient: weight of KL(q‖p)/N in the loss (0: expected NLL; 1: the ELBO)
    log_std_lr_scale: float = 1.0  # gradient: learning-rate multiplier of log σ
    factor_lr_scale: float = 0.01  # gradient: learning-rate multiplier of the low-rank factor D

    def check(self) -> None:
        """Refuse a choice that names no rule (one-line ValueError, the configuration key)."""
        for name, choice, allowed in (
            ("kind", self.kind, ("natural", "gradient")),
            ("curvature", self.curvature, ("fisher", "reparam")),
            ("curvature_source", self.curvature_source, ("clean", "perturbed")),
        ):
            if choice not in allowed:
                raise ValueError(
                    f"method.variance.{name} must be one of {list(allowed)}, got {choice!r}"
                )
        if not 0 <= self.curvature_beta2 < 1:
            raise ValueError(
                f"method.variance.curvature_beta2 must lie in [0, 1), got {self.curvature_beta2}"
            )
