"""Training checkpoints: any nested state in one safetensors file, written atomically.

A checkpoint holds tensors (θ, optimiser moments, RNG states, …) and plain values (epoch,
history, learning-rate schedule, …) in arbitrary nesting. :func:`pack` splits such a state into
a flat ``{key: tensor}`` dict and a JSON structure that names the tensors; both go into one
``.safetensors`` file (the structure as its metadata). Loading reads tensors and JSON only: no
pickle, so a crafted file cannot run code.

Writing is atomic: a temporary file in the same folder, flushed and fsynced, then renamed over the
old checkpoint (and the folder fsynced), so a kill at any moment leaves either the previous or the
new checkpoint, never a torn one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import Tensor

from sabma.runs.files import atomic_write_bytes, tensor_hash

_TENSOR = "__tensor__"
_ITEMS = "__items__"  # a dict whose keys are not all strings (optimiser state: int keys)
_TUPLE = "__tuple__"
_FORMAT = "sabma-checkpoint-1"


def pack(state: Any) -> tuple[dict[str, Tensor], Any]:
    """``(tensors, structure)``: the tensors of ``state`` under generated keys, and a JSON-able
    copy of ``state`` with each tensor replaced by a reference to its key."""
    tensors: dict[str, Tensor] = {}

    def walk(value: Any) -> Any:
        if isinstance(value, Tensor):
            key = f"t{len(tensors)}"
            tensors[key] = value.detach().to("cpu", copy=True).contiguous()
            return {_TENSOR: key}
        if isinstance(value, dict):
            if all(isinstance(k, str) for k in value):
                return {k: walk(v) for k, v in value.items()}
            return {_ITEMS: [[walk(k), walk(v)] for k, v in value.items()]}
        if isinstance(value, tuple):
            return {_TUPLE: [walk(v) for v in value]}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if value is None or isinstance(value, bool | int | float | str):
            return value
        raise TypeError(f"cannot checkpoint a value of type {type(value).__name__}")

    return tensors, walk(state)


def unpack(structure: Any, tensors: dict[str, Tensor]) -> Any:
    """The inverse of :func:`pack`."""
    if isinstance(structure, dict):
        if set(structure) == {_TENSOR}:
            return tensors[structure[_TENSOR]]
        if set(structure) == {_ITEMS}:
            return {unpack(k, tensors): unpack(v, tensors) for k, v in structure[_ITEMS]}
        if set(structure) == {_TUPLE}:
            return tuple(unpack(v, tensors) for v in structure[_TUPLE])
        return {k: unpack(v, tensors) for k, v in structure.items()}
    if isinstance(structure, list):
        return [unpack(v, tensors) for v in structure]
    return structure


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (see the module docstring)."""
    tensors, structure = pack(state)
    metadata = {"format": _FORMAT, "state": json.dumps(structure), "sha256": tensor_hash(tensors)}
    # a unique temporary name in the same folder (fsync, rename): see atomic_write_bytes
    atomic_write_bytes(path, save(tensors, metadata=metadata))
    _fsync_dir(path.parent)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors on the CPU)."""
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable checkpoint ({err})") from None
    if metadata.get("format") != _FORMAT or "state" not in metadata:
        raise ValueError(f"{path} is not a sabma checkpoint")
    if "sha256" in metadata and tensor_hash(tensors) != metadata["sha256"]:
        raise ValueError(
            f"{path} is damaged (its tensors do not match the hash written with them); delete it "
            "to restart the run from the beginning with --resume, or choose another --out"
        )
    state = unpack(json.loads(metadata["state"]), tensors)
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a sabma checkpoint")
    return state


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not every platform opens folders
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict[str, Tensor | list[Tensor]]:
    """The global torch RNG states (CPU and every CUDA device)."""
    state: dict[str, Tensor | list[Tensor]] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
