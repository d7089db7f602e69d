"""The configuration's sections other than ``method`` (:mod:`sabma.config.method`), and the whole
:class:`Config`. Every field has a default: the embedded default task, 10-shot Fashion-MNIST from
EfficientNet-Lite0 with SA-BMA."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

from sabma.config.method import MethodConfig

#: S, the number of posterior draws of a BMA predictive, wherever none is given
DEFAULT_BMA_SAMPLES = 30


@dataclass
class SWAGSnapshots:
    """When a SWAG run snapshots the subset, and how many deviations its factor keeps (SWAG's
    and F-SWAG's sections, and the SWAG prior's run)."""

    rank: int = 5  # K, the deviations kept for the low-rank factor
    start: int = 0  # first epoch whose end is snapshotted (0: half the run's epochs)
    every: int = 1  # snapshot every c epochs


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
    # train and test on these classes only (indices into the dataset's classes; empty: all);
    # the others are then the near out-of-distribution set (`sabma evaluate --ood near`)
    classes: list[int] = field(default_factory=list)


@dataclass
class LoRAOptions:
    """The LoRA adapters of ``model.subset=lora`` (injected with peft, as-is)."""

    rank: int = 8  # r
    alpha: int = 16  # the adapters' scaling is alpha / rank
    targets: list[str] = field(default_factory=lambda: ["query", "value"])  # module names
    dropout: float = 0.0


@dataclass
class ModelConfig:
    backbone: str = "efficientnet_lite0"
    weights: str | None = None  # a local weights file (state dict; timm: its checkpoint file)
    # torchvision:, timm:, hf:<hub id>: fetch the zoo's pre-trained weights through its own
    # download and cache (false: random weights for torchvision/timm, the cache only for hf)
    pretrained: bool = False
    subset: str = "norm+head"  # norm+head | head | norm | lora | all | a regex over names
    lora: LoRAOptions = field(default_factory=LoRAOptions)  # subset=lora: the adapters
    bn_mode: str = (
        "eval"  # "eval": pre-trained running statistics, no dropout; "train": batch stats
    )


@dataclass
class PriorSWAG(SWAGSnapshots):
    """The SWAG run behind ``prior.kind=swag`` and ``init.kind=swag``: constant-lr SGD from w_pre
    on the training split (its snapshots: ``start`` 0 is half of ``epochs``)."""

    epochs: int = 20
    lr: float = 0.01


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
    swag: PriorSWAG = field(default_factory=PriorSWAG)  # behind prior.kind=swag, init.kind=swag
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
class OptimConfig:
    epochs: int = 30
    batch_size: int = 25
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.0
    warmup_epochs: int = 2
    # learning rates to choose from on the validation split (one full run each; empty: optim.lr)
    lr_grid: list[float] = field(default_factory=list)
    # values of the method's main knob (`sabma methods` names it) to choose from on the
    # validation split, at the learning rate chosen first (one full run each; empty: no search)
    knob_grid: list[float] = field(default_factory=list)
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
        """Nested plain values: each section's fields (``method``: :meth:`MethodConfig.to_dict`)."""
        values: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, MethodConfig):
                value = value.to_dict()
            elif is_dataclass(value) and not isinstance(value, type):
                value = asdict(value)
            values[f.name] = value
        return values
