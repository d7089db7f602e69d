"""Experiment configuration: nested dataclasses, YAML files and ``--set key.path=value`` overrides.

Every field has a default, so an empty file is a valid configuration (the embedded default:
10-shot Fashion-MNIST from EfficientNet-Lite0 with SA-BMA). Unknown keys are errors that list the
valid ones; values are parsed as YAML scalars: ``--set method.sabma.rho=0.1``,
``--set data.augment=true``, ``--set method.sabma.perturb=[mean]``. Each method has a section of
its own under ``method`` (:mod:`sabma.config.method`).
"""

from sabma.config.io import config_from_dict, dump_config, load_config
from sabma.config.method import MethodConfig
from sabma.config.sections import (
    DEFAULT_BMA_SAMPLES,
    Config,
    DataConfig,
    EvalConfig,
    InitConfig,
    ModelConfig,
    OptimConfig,
    PriorConfig,
)

__all__ = [
    "DEFAULT_BMA_SAMPLES",
    "Config",
    "DataConfig",
    "EvalConfig",
    "InitConfig",
    "MethodConfig",
    "ModelConfig",
    "OptimConfig",
    "PriorConfig",
    "config_from_dict",
    "dump_config",
    "load_config",
]
