"""Checking a configuration before anything is built, trained or written.

Every bad value is one clear line (a ValueError) that names the key, the value and what is
allowed. Checks that need data or a model (a subset that matches no parameter, more shots than a
class has) happen when those are loaded, still before the run directory is created.
"""

from __future__ import annotations

import math
import os
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from sabma.config import Config
from sabma.data.tasks import check_backbone_kind
from sabma.device import amp_dtype, resolve_device
from sabma.methods import METHODS
from sabma.models.registry import check_backbone_name
from sabma.pipeline.grid import candidate_config, knob_unused, label, method_knob
from sabma.priors.initial import INIT_KINDS
from sabma.priors.pretrained import PRIOR_KINDS
from sabma.runs.folder import CHECKPOINT, CONFIG, METRICS


def _finite_numbers(node: Any, prefix: str = "") -> None:
    for f in fields(node):
        value = getattr(node, f.name)
        key = f"{prefix}{f.name}"
        if is_dataclass(value):
            _finite_numbers(value, f"{key}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{key} must be a finite number, got {value}")


def _at_least(key: str, value: float, low: float, strict: bool = False) -> None:
    if strict and not value > low:
        raise ValueError(f"{key} must be > {low}, got {value}")
    if not strict and not value >= low:
        raise ValueError(f"{key} must be >= {low}, got {value}")


def check_config(cfg: Config) -> None:
    """Raise a one-line ValueError for the first invalid value of ``cfg``."""
    _finite_numbers(cfg)
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or not 0 <= cfg.seed < 2**32:
        raise ValueError(f"seed must be an integer in 0..{2**32 - 1}, got {cfg.seed!r}")
    lora = cfg.model.lora
    if cfg.model.subset == "lora" and (
        lora.rank < 1 or lora.alpha <= 0 or not 0 <= lora.dropout < 1
    ):
        raise ValueError(
            "LoRA needs model.lora.rank >= 1, model.lora.alpha > 0 and model.lora.dropout in "
            f"[0, 1), got {lora.rank}, {lora.alpha}, {lora.dropout}"
        )
    cfg.method.typed()  # a section read before the methods were imported is checked here
    if cfg.method.name not in METHODS:
        raise ValueError(f"unknown method {cfg.method.name!r}; choose one of {sorted(METHODS)}")
    METHODS[cfg.method.name].check(cfg)
    check_backbone_name(cfg.model.backbone)
    _data_matches_backbone(cfg)
    if cfg.prior.kind not in PRIOR_KINDS:
        raise ValueError(f"unknown prior kind {cfg.prior.kind!r}; choose one of {PRIOR_KINDS}")
    if cfg.init.kind not in INIT_KINDS:
        raise ValueError(f"unknown init kind {cfg.init.kind!r}; choose one of {INIT_KINDS}")
    if cfg.model.bn_mode not in ("train", "eval"):
        raise ValueError(f"model.bn_mode must be 'train' or 'eval', got {cfg.model.bn_mode!r}")
    amp_dtype(cfg.optim.amp)
    resolve_device(cfg.device)
    for key, value, low, strict in (
        ("data.shots", cfg.data.shots, 1, False),
        ("data.val_shots", cfg.data.val_shots, 1, False),
        ("data.test_size", cfg.data.test_size, 0, False),
        ("data.resolution", cfg.data.resolution, 8, False),
        ("data.max_tokens", cfg.data.max_tokens, 2, False),
        *_method_bounds(cfg),
        ("optim.lr", cfg.optim.lr, 0, True),
        ("optim.epochs", cfg.optim.epochs, 1, False),
        ("optim.batch_size", cfg.optim.batch_size, 1, False),
        ("optim.momentum", cfg.optim.momentum, 0, False),
        ("optim.weight_decay", cfg.optim.weight_decay, 0, False),
        ("optim.warmup_epochs", cfg.optim.warmup_epochs, 0, False),
        ("optim.checkpoint_every", cfg.optim.checkpoint_every, 0, False),
        ("eval.samples", cfg.eval.samples, 1, False),
        ("eval.val_samples", cfg.eval.val_samples, 1, False),
        ("eval.eval_every", cfg.eval.eval_every, 1, False),
        ("eval.patience", cfg.eval.patience, 0, False),
        ("eval.batch_size", cfg.eval.batch_size, 1, False),
        ("prior.norm_std", cfg.prior.norm_std, 0, True),
        ("prior.head_var", cfg.prior.head_var, 0, False),
        ("init.norm_std", cfg.init.norm_std, 0, True),
        ("init.head_std", cfg.init.head_std, 0, True),
        ("init.scale", cfg.init.scale, 0, True),
    ):
        _at_least(key, value, low, strict)
    check_grid(cfg.optim.lr_grid)
    check_knob_grid(cfg)
    if not cfg.optim.momentum < 1:
        raise ValueError(f"optim.momentum must be < 1, got {cfg.optim.momentum}")


def _method_bounds(cfg: Config) -> list[tuple[str, float, float, bool]]:
    """(key, value, lower bound, strict) of every registered method's sections (each key
    once; :meth:`~sabma.methods.base.Method.bounds`)."""
    found: dict[str, tuple[str, float, float, bool]] = {}
    for cls in METHODS.values():
        for bound in cls.bounds(cfg):
            found.setdefault(bound[0], bound)
    return list(found.values())


def _data_matches_backbone(cfg: Config) -> None:
    data = cfg.data
    kind = check_backbone_kind(cfg)
    if kind == "text" and data.augment:
        raise ValueError("data.augment applies to images only; set it to false for texts")
    if not 0 < data.test_fraction < 1:
        raise ValueError(f"data.test_fraction must be in (0, 1), got {data.test_fraction}")


def check_out_dir(out: Path) -> None:
    """Refuse a folder that holds a finished or interrupted run or cannot be written, without
    creating it."""
    if (out / METRICS).exists():
        raise ValueError(f"{out} already holds a finished run; choose another --out")
    if (out / CONFIG).exists() or (out / CHECKPOINT).exists():
        raise ValueError(
            f"{out} holds an interrupted run: --resume to continue it, or choose another --out"
        )
    existing = out
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"output folder {out}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"output folder {out} is not writable ({existing}: permission denied)")


def check_grid(grid: list[float]) -> None:
    if any(not (isinstance(v, float) and math.isfinite(v) and v > 0) for v in grid):
        raise ValueError(f"optim.lr_grid must hold positive learning rates, got {grid}")
    if len(set(grid)) != len(grid):
        raise ValueError(f"optim.lr_grid has repeated values: {grid}")


def check_knob_grid(cfg: Config) -> None:
    """``optim.knob_grid``: only for a method with a knob, finite values, no repeats, each a
    valid setting of the knob (checked as the candidate's configuration)."""
    grid = cfg.optim.knob_grid
    if not grid:
        return
    knob = method_knob(cfg)
    if not knob:
        raise ValueError(
            f"optim.knob_grid is set, but method {cfg.method.name!r} has no knob to search "
            "besides the learning rate; remove optim.knob_grid"
        )
    unused = knob_unused(cfg)
    if unused:
        raise ValueError(f"optim.knob_grid searches a knob that does nothing here: {unused}")
    if any(not (isinstance(v, int | float) and math.isfinite(v)) for v in grid):
        raise ValueError(f"optim.knob_grid must hold finite values of {knob}, got {grid}")
    if len({label(v) for v in grid}) != len(grid):
        raise ValueError(f"optim.knob_grid has repeated values (to 6 digits): {grid}")
    for value in grid:
        try:
            check_config(candidate_config(cfg, cfg.optim.lr, value))
        except ValueError as err:
            raise ValueError(f"optim.knob_grid value {value:g}: {err}") from None
