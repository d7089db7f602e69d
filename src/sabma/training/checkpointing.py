"""The training loop's state, typed, and where and how often it is written.

:class:`LoopState` is everything :func:`sabma.training.loop.fit` needs to continue bit for bit: the
posterior, the network's buffers, the method's state and, inside a member, the optimiser,
schedule, loss scaler, RNG states, the epoch's batch order and position, the losses so far and the
best state. It is the one place a checkpoint is built or read; the file format
(:mod:`sabma.runs.checkpoint`: one safetensors file, no pickle) keeps its keys.
"""

from __future__ import annotations

import time
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from torch import Tensor

from sabma.runs.checkpoint import load_checkpoint, save_checkpoint


@dataclass
class Checkpointing:
    """Where and how often :func:`fit` saves its state, and the state to resume from."""

    path: Path
    every: int = 50
    """steps between checkpoints (0: only when training ends)"""
    resume: LoopState | None = None
    """the state to continue from (:meth:`LoopState.load`)"""
    started: float = field(default_factory=time.perf_counter)
    elapsed_before: float = 0.0
    """training seconds spent before this process (carried through checkpoints)"""
    write: bool = True
    """False in the processes other than rank 0 of a multi-process run (they only resume)"""
    config: str = ""
    """the run's configuration (YAML), written into every checkpoint: a resume checks it"""

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started


@dataclass
class BestState:
    """The state with the best validation NLL so far (model selection)."""

    val_nll: float
    posterior: dict[str, Tensor]
    buffers: dict[str, Tensor]


@dataclass
class LoopState:
    """The training loop's state at a step boundary (``done``: after the last member)."""

    done: bool
    names: list[str]
    member: int
    history: list[dict[str, Any]]
    """the per-epoch entries of the members before ``member``"""
    posterior: dict[str, Tensor]
    buffers: dict[str, Tensor]
    method: dict[str, Any]
    elapsed: float
    # inside a member (not set when done)
    member_history: list[dict[str, Any]] = field(default_factory=list)
    epoch: int = 0
    position: int = 0
    steps: int = 0
    order: Tensor | None = None
    losses: list[float] = field(default_factory=list)
    skipped: int = 0
    optimizer: dict[str, Any] | None = None
    schedule: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    generator: Tensor | None = None
    rng: dict[str, Any] | None = None
    best: BestState | None = None
    config: str = ""
    """the configuration (YAML) the run was started with ("" in older checkpoints)"""

    def save(self, path: Path) -> None:
        """Write the state to ``path`` atomically."""
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.best is not None:
            state["best"] = {f.name: getattr(self.best, f.name) for f in fields(self.best)}
        save_checkpoint(path, state)

    @classmethod
    def load(cls, path: Path) -> LoopState:
        """Read a state written by :meth:`save` (ValueError for anything else)."""
        state = load_checkpoint(path)
        known = {f.name for f in fields(cls)}
        required = {
            f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
        }
        if not required <= set(state) or not set(state) <= known:
            raise ValueError(f"{path} is not a training checkpoint of this version of sabma")
        if state.get("best") is not None:
            state["best"] = BestState(**state["best"])
        return cls(**state)
