"""What ``--resume`` may continue: the run's saved configuration and checkpoint, checked.

A resume continues the *same* run: its data, model, prior, method, seed and batch shape are its
identity and may not change. The settings in :data:`RESUMABLE` change how fast it moves or how
it is watched, not what it is: a resume may change them (e.g. a lower learning rate after a
divergence); the change is logged and written to the run's config.yaml.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from sabma.config import Config, dump_config, load_config
from sabma.posterior.gaussian import GaussianPosterior
from sabma.runs.files import atomic_write_text
from sabma.runs.folder import CHECKPOINT, CONFIG, METRICS
from sabma.training import LoopState

log = logging.getLogger(__name__)

#: dotted keys a resume may change (docs/reliability.md lists them)
RESUMABLE = (
    "optim.lr",
    "optim.checkpoint_every",
    "eval.samples",
    "eval.val_samples",
    "eval.eval_every",
    "eval.patience",
    "eval.temperature_scaling",
    "eval.batch_size",
)


def same_config(saved: Path, cfg: Config) -> bool:
    """Whether the run configuration saved at ``saved`` is ``cfg`` (compared as configurations,
    so a folder written with the old flat method keys still matches)."""
    return load_config(saved) == cfg


def changed_keys(before: Any, after: Any) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (old, new)} for the leaves of two configuration dicts that differ."""
    found: dict[str, tuple[Any, Any]] = {}

    def walk(a: Any, b: Any, key: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{key}.{k}" if key else k)
        elif a != b:
            found[key] = (a, b)

    walk(before, after, "")
    return found


def describe(changes: dict[str, tuple[Any, Any]]) -> str:
    """``key: old → new`` (at most 4 shown)."""
    shown = [f"{k}: {a!r} → {b!r}" for k, (a, b) in list(changes.items())[:4]]
    more = f", … ({len(changes)} in all)" if len(changes) > 4 else ""
    return ", ".join(shown) + more


def identity_changes(before: dict[str, Any], cfg: Config) -> dict[str, tuple[Any, Any]]:
    """The changes from ``before`` to ``cfg`` that a resume may not make."""
    changes = changed_keys(before, cfg.to_dict())
    return {k: v for k, v in changes.items() if k not in RESUMABLE}


def resume_state(cfg: Config, out: Path) -> LoopState | None:
    """The checkpoint to resume ``out`` from (None: start from scratch), after checks; a change
    of a :data:`RESUMABLE` setting is logged and written to the run's config.yaml."""
    if (out / METRICS).exists():
        raise ValueError(f"{out} holds a finished run; there is nothing to resume")
    saved = out / CONFIG
    if not saved.is_file():
        raise ValueError(f"{out} holds no run to resume (no config.yaml)")
    before = load_config(saved).to_dict()
    forbidden = identity_changes(before, cfg)
    if forbidden:
        raise ValueError(
            f"the configuration differs from the one of the run in {out} ({describe(forbidden)}); "
            f"a resume may change only {', '.join(RESUMABLE)}: resume with the same "
            "--config/--set, or start a new run in another --out"
        )
    path = out / CHECKPOINT
    state = LoopState.load(path) if path.is_file() else None
    if state is not None and state.config:
        forbidden = identity_changes(yaml.safe_load(state.config), cfg)
        if forbidden:
            raise ValueError(
                f"{saved} differs from the configuration {path.name} was written with "
                f"({describe(forbidden)}); restore it to resume, or start a new run in another "
                "--out"
            )
    allowed = changed_keys(before, cfg.to_dict())
    if allowed:
        log.warning("resuming %s with %s", out, describe(allowed))
        atomic_write_text(saved, dump_config(cfg))
    return state


def check_checkpoint(state: LoopState, posterior: GaussianPosterior, path: Path) -> None:
    """Refuse a checkpoint written for another model, subset or rank."""
    saved = state.posterior
    if state.names != posterior.names or any(
        tuple(saved[k].shape) != tuple(v.shape) for k, v in posterior.state_dict().items()
    ):
        raise ValueError(
            f"{path} was written for another model, subset or rank than this run's "
            f"({len(posterior.names)} tensors, d = {posterior.dim}, K = {posterior.rank})"
        )
