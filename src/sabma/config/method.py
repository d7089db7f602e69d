"""The ``method`` section: which method trains the subset, and one small section per method.

Each method reads only its own section (``method.sabma``, ``method.swag``, …): the knobs of
SA-BMA live under ``method.sabma`` and ``method.variance``, bSAM's under ``method.bsam``, and so
on; ``sabma methods --options`` lists them. ``method.variance`` is shared by the two methods that
learn a Gaussian's σ and D the same way: SA-BMA and VI (ρ = 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SWAGSnapshots:
    """When a SWAG run snapshots the subset, and how many deviations its factor keeps."""

    rank: int = 5  # K, the deviations kept for the low-rank factor
    start: int = 0  # first epoch whose end is snapshotted (0: half the run's epochs)
    every: int = 1  # snapshot every c epochs


@dataclass
class SABMAOptions:
    rank: int = 5  # K of the posterior's low-rank factor
    rho: float = 1.0  # KL radius: KL(q_θ+ε ‖ q_θ) ≤ ρ²/2; ρ = 1 moves μ by about one σ
    metric: str = "fisher"  # fisher | euclidean: the norm of the perturbation ball
    perturb: list[str] = field(default_factory=lambda: ["mean", "log_std"])
    perturb_every: int = 1  # ε formed every k steps, reused in between


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


@dataclass
class SAMOptions:
    rho: float = 0.05  # the Euclidean radius of the ascent
    perturb_every: int = 1  # ε formed every k steps, reused in between


@dataclass
class FSAMOptions(SAMOptions):
    eta: float = 1.0  # the Fisher preconditioner's range: f = 1 + η·g²/max g² ∈ [1, 1 + η]


@dataclass
class BSAMOptions:
    rho: float = 0.05  # ρ of the adversarial step ρ·g/s
    beta2: float = 0.999  # β₂ of the precision s
    gamma: float = 100.0  # damping γ (variance floor 1/(N·γ)); chosen on validation
    beta: float = 0.0  # weight of the prior's precision added to s (0: no prior term)


@dataclass
class VIOptions:
    moped_delta: float = 0.01  # initial σ = δ·|w_pre| (MOPED); σ and D: method.variance


@dataclass
class IVONOptions:
    ess: float = 0.0  # λ (0: N/temperature, the tempered posterior SA-BMA targets)
    temperature: float = 0.001  # T of λ = N/T when ess is 0
    hess_init: float = 1.0  # h₀, the initial curvature (σ₀ = 1/√(λ(h₀ + δ)))
    beta2: float = 0.99999  # the curvature average's memory (the package's default)
    weight_decay: float = 1e-4  # δ, the package's prior precision per example


@dataclass
class PTLOptions:
    weight: float = 0.01  # λ of −(λ/N)·log p(w); chosen on validation


@dataclass
class EnsembleOptions:
    size: int = 5  # number of members M


@dataclass
class CSGLDOptions:
    cycles: int = 1  # number of cosine cycles; chosen on validation
    sample_fraction: float = 0.3  # the noisy, sampling end of each cycle
    temperature: float = 1.0  # T of the Langevin noise √(2·lr·T/N)


@dataclass
class EMCMCOptions(CSGLDOptions):
    """cSGLD's cycles, sampling end and noise, with the guide's coupling."""

    eta: float = 0.03  # coupling scale η of ‖w − w_a‖²/(2η)
    keep: str = "guide"  # keep the guide w_a (flat basins) or the model w


@dataclass
class LaplaceOptions:
    subset: str = "last_layer"  # last_layer | subset
    hessian: str = "kron"  # kron | diag | full (subset: diag | full)
    # last_layer: the prior precision (0: fitted by marginal likelihood, laplace-torch's way)
    prior_precision: float = 0.0


@dataclass
class MCDropoutOptions:
    p: float | None = None  # rate of every dropout layer (None: the model's)


@dataclass
class SWAGOptions(SWAGSnapshots):
    lr_ratio: float = 0.5  # the cosine schedule stops at this fraction of lr


@dataclass
class FSWAGOptions(SAMOptions, SWAGOptions):
    """SWAG's snapshots along SAM's iterates (ρ: the SAM ascent's radius)."""


@dataclass
class MethodConfig:
    name: str = "sabma"  # see `sabma methods`
    frozen: str = "fixed"  # fixed | prior: the rest at w_pre, or re-sampled N(w_pre, frozen_std²)
    frozen_std: float = 0.0
    sabma: SABMAOptions = field(default_factory=SABMAOptions)
    variance: VarianceOptions = field(default_factory=VarianceOptions)
    sam: SAMOptions = field(default_factory=SAMOptions)
    fsam: FSAMOptions = field(default_factory=FSAMOptions)
    bsam: BSAMOptions = field(default_factory=BSAMOptions)
    vi: VIOptions = field(default_factory=VIOptions)
    ivon: IVONOptions = field(default_factory=IVONOptions)
    ptl: PTLOptions = field(default_factory=PTLOptions)
    ensemble: EnsembleOptions = field(default_factory=EnsembleOptions)
    csgld: CSGLDOptions = field(default_factory=CSGLDOptions)
    emcmc: EMCMCOptions = field(default_factory=EMCMCOptions)
    laplace: LaplaceOptions = field(default_factory=LaplaceOptions)
    mcdropout: MCDropoutOptions = field(default_factory=MCDropoutOptions)
    swag: SWAGOptions = field(default_factory=SWAGOptions)
    fswag: FSWAGOptions = field(default_factory=FSWAGOptions)
