"""Experiment configuration: nested dataclasses, YAML files and ``--set key.path=value`` overrides.

Every field has a default, so an empty file is a valid configuration (the embedded default:
10-shot Fashion-MNIST from EfficientNet-Lite0 with SA-BMA). Unknown keys are errors that list the
valid ones; values are parsed as YAML scalars: ``--set method.rho=0.1``,
``--set data.augment=true``, ``--set method.perturb=[mean]``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

#: S, the number of posterior draws of a BMA predictive, wherever none is given
DEFAULT_BMA_SAMPLES = 30


@dataclass
class DataConfig:
    # images: fashion_mnist | npz | image_folder | cifar10 | cifar100; texts: rotten_tomatoes | csv
    dataset: str = "fashion_mnist"
    root: str | None = None  # the data (idx folder, .npz file, image tree, CIFAR folder, CSV file)
    shots: int = 10  # training examples per class
    val_shots: int = 10  # validation examples per class, disjoint from training
    test_size: int = 1000  # a fixed random subset of the test set; 0 = all of it
    test_fraction: float = 0.2  # held out as the test set where the data have no test split
    resolution: int = 64  # images: side in pixels the backbone sees
    augment: bool = False  # images: light augmentation (shifts, flips), training only
    test_file: str | None = None  # csv: a separate test CSV (None: test_fraction held out)
    text_column: str = "text"  # csv: the column holding the text
    label_column: str = "label"  # csv: the column holding the class (any strings)
    max_tokens: int = 64  # texts: longer texts are truncated to this many tokens


@dataclass
class ModelConfig:
    backbone: str = "efficientnet_lite0"
    weights: str | None = None  # a weights file, for backbones that need one
    subset: str = "norm+head"
    bn_mode: str = (
        "eval"  # "eval": pre-trained running statistics, no dropout; "train": batch stats
    )


@dataclass
class PriorConfig:
    kind: str = "isotropic"  # isotropic | swag | file
    # τ: N(w_pre, τ² I) on the normalization parameters (isotropic); wide: the temperature, not
    # the prior, keeps the posterior narrow (docs/results.md: chosen on validation)
    norm_std: float = 1.0
    # α: the prior N(0, α I) on the new head (every kind); 0: automatic, 50 / E‖φ(x)‖² for the
    # features φ entering the head (a logit's prior std ≈ 7 whatever the features' scale)
    head_var: float = 0.0
    scale: float = 1.0  # multiplies the covariance of a swag / file prior
    var_floor: float = 1e-6  # lower bound on SWAG / file variances (before scaling)
    # the SWAG run behind prior.kind=swag and init.kind=swag:
    swag_epochs: int = 20  # SGD epochs from w_pre on the training split (constant LR)
    swag_lr: float = 0.01
    swag_start: int = 0  # first epoch whose end is snapshotted (0: half of swag_epochs)
    swag_every: int = 1  # snapshot every c epochs
    swag_rank: int = 5
    file_path: str | None = None  # file: folder holding <name>_{mean,variance,covmat}.pt
    file_name: str = "prior"


@dataclass
class InitConfig:
    """The posterior before training (independent of the prior; the mean always starts at w_pre
    off the head and at 0 on the new head)."""

    kind: str = "fixed"  # fixed | prior | swag | file: where the initial σ and D come from
    norm_std: float = 0.01  # fixed: σ of the normalization parameters
    head_std: float = 0.01  # fixed, prior, file: σ of the new head
    scale: float = 1.0  # prior, swag, file: multiplies the covariance taken over


@dataclass
class MethodConfig:
    name: str = "sabma"  # see `sabma methods`
    rank: int = 5  # K of the posterior's low-rank factor
    rho: float = 1.0  # KL radius: KL(q_θ+ε ‖ q_θ) ≤ ρ²/2; ρ = 1 moves μ by about one σ
    metric: str = "fisher"
    perturb: list[str] = field(default_factory=lambda: ["mean", "log_std"])
    # sabma / vi: how σ and D are learned: natural (σ² = T/(λ(h+δ)) from a curvature h, D from
    # the Fisher; a tempered posterior) | gradient (SGD on log σ and D, the research code's path)
    variance: str = "natural"
    temperature: float = 0.001  # natural: T (1: the posterior, < 1: a cold posterior)
    ess: float = 0.0  # natural: λ, the effective sample size (0: the number of training examples)
    curvature: str = "fisher"  # natural: fisher (sampled-label Fisher, training set) | reparam
    curvature_source: str = "perturbed"  # reparam: the pass that feeds h: clean | perturbed
    curvature_beta2: float = 0.99  # reparam: h averaged at rate 1 − β₂ per step
    refresh_epochs: int = 1  # fisher: epochs between refreshes of h and D
    fisher_samples: int = 1  # fisher: label draws per training example
    fisher_examples: int = 256  # fisher: at most this many examples per refresh (seeded subset)
    beta: float = 0.0  # gradient: weight of KL(q‖p)/N in the loss (0: expected NLL; 1: the ELBO)
    log_std_lr_scale: float = 1.0  # gradient: learning-rate multiplier of log σ
    factor_lr_scale: float = 0.01  # gradient: learning-rate multiplier of the low-rank factor D
    sam_rho: float = 0.05  # Euclidean radius of sam / fswag / fsam
    fsam_eta: float = 1.0  # fsam: η of the Fisher preconditioner 1 + η·g²
    bsam_rho: float = 0.05  # bsam: ρ of the adversarial step ρ·g/s
    bsam_beta2: float = 0.999  # bsam: β₂ of the precision s
    bsam_gamma: float = 100.0  # bsam: damping γ (variance floor 1/(N·γ)); chosen on validation
    moped_delta: float = 0.01  # vi: initial σ = δ·|w_pre| (MOPED)
    ivon_ess: float = 0.0  # ivon: λ (0: N/temperature, the tempered posterior SA-BMA targets)
    ivon_hess_init: float = 1.0  # ivon: h₀, the initial curvature (σ₀ = 1/√(λ(h₀ + δ)))
    ivon_beta2: float = 0.99999  # ivon: the curvature average's memory (the package's default)
    ivon_weight_decay: float = 1e-4  # ivon: δ, the package's prior precision per example
    ptl_weight: float = 0.01  # ptl: λ of −(λ/N)·log p(w); chosen on validation
    ensemble_size: int = 5  # ensemble: number of members M
    csgld_cycles: int = 1  # csgld / emcmc: number of cosine cycles; chosen on validation
    csgld_sample_fraction: float = 0.3  # csgld: the noisy, sampling end of each cycle
    csgld_temperature: float = 1.0  # csgld: T of the Langevin noise √(2·lr·T/N)
    emcmc_eta: float = 0.03  # emcmc: coupling scale η of ‖w − w_a‖²/(2η)
    emcmc_keep: str = "guide"  # emcmc: keep the guide w_a (flat basins) or the model w
    laplace_subset: str = "last_layer"  # laplace: last_layer | subset
    laplace_hessian: str = "kron"  # laplace: kron | diag | full (subset: diag | full)
    dropout_p: float | None = None  # mcdropout: rate of every dropout layer (None: the model's)
    swag_start: int = 0  # swag / fswag: first epoch whose end is snapshotted (0: half the budget)
    swag_every: int = 1  # swag / fswag: snapshot every c epochs
    swag_lr_ratio: float = 0.5  # swag / fswag: the cosine schedule stops at this fraction of lr
    frozen: str = "fixed"  # fixed | prior: the rest at w_pre, or re-sampled N(w_pre, frozen_std²)
    frozen_std: float = 0.0
    perturb_every: int = 1  # sabma / sam / fsam: ε formed every k steps, reused in between


@dataclass
class OptimConfig:
    epochs: int = 30
    batch_size: int = 25
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.0
    warmup_epochs: int = 2
    # learning rates to choose from on the validation split (one full run each; empty: optim.lr)
    lr_grid: list[float] = field(default_factory=list)
    amp: str = "none"  # none | bf16 | fp16: autocast of the network (fp16 with loss scaling)
    checkpoint_every: int = 50  # training steps between checkpoints (0: at the end only)


@dataclass
class EvalConfig:
    samples: int = DEFAULT_BMA_SAMPLES  # S for the BMA predictive
    val_samples: int = 10  # S for model selection on validation BMA NLL
    eval_every: int = 2  # epochs between validation evaluations
    patience: int = 4  # stop after this many evaluations without a better validation NLL (0: off)
    temperature_scaling: bool = True  # also report test metrics after temperature scaling
    batch_size: int = 100  # 100 was the fastest of 50/100/250 for BMA on the 2-core CPU VM


@dataclass
class Config:
    seed: int = 0
    device: str = "auto"  # auto (CUDA when available, else CPU) | cpu | cuda | cuda:N | mps …
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    init: InitConfig = field(default_factory=InitConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def config_from_dict(values: dict[str, Any], overrides: list[str] | None = None) -> Config:
    """A :class:`Config` from nested ``values`` and ``key.path=value`` overrides."""
    merged = _merge({}, values or {})
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not of the form key.path=value")
        node = merged
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a section")
        try:
            node[leaf] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            reason = " ".join(str(err).split())
            raise ValueError(f"override {item!r}: the value is not valid YAML ({reason})") from None
    return _build(Config, merged, "")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (``None``: the defaults) and apply overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"config file {file} does not exist")
        try:
            loaded = yaml.safe_load(file.read_text())
        except yaml.YAMLError as err:
            reason = " ".join(str(err).split())
            raise ValueError(f"config file {file} is not valid YAML: {reason}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"config file {file} must hold a mapping at the top level")
        values = loaded or {}
    return config_from_dict(values, overrides)


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def _build(cls: type[Any], values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise ValueError(
            f"config section {where.rstrip('.') or 'top level'!r} must be a mapping, got {values!r}"
        )
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"unknown config key {where + unknown[0]!r}; valid keys here: {sorted(known)}"
        )
    kwargs = {}
    for name, value in values.items():
        kind = hints[name]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            kwargs[name] = _build(kind, value, f"{where}{name}.")
        else:
            kwargs[name] = _coerce(value, kind, where + name)
    return cls(**kwargs)


def _coerce(value: Any, kind: Any, key: str) -> Any:
    if isinstance(value, dict):
        raise ValueError(f"config key {key!r} is a value, not a section")
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0])
    if origin is list:
        (item,) = typing.get_args(kind)
        items = value if isinstance(value, list) else [value]
        return [_coerce(v, item, key) for v in items]
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"config key {key!r} must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"config key {key!r} must be an integer, got {value!r}")
    if kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"config key {key!r} must be a number, got {value!r}")
    if kind is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"config key {key!r} must be a string, got {value!r}")
    return value
