"""Files of a run directory, each written atomically (temporary file, fsync, rename)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from sabma.posterior.gaussian import GaussianPosterior


def tensor_hash(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors' names, dtypes, shapes and bytes (in name order): recorded when
    a file is written, checked when it is read back."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def read_json(path: Path, what: str, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON object from ``path`` with ``keys``; one line naming the file otherwise."""
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is damaged ({err}); {what}") from None
    if not isinstance(value, dict) or any(k not in value for k in keys):
        raise ValueError(f"{path} is damaged (not the expected JSON object); {what}")
    return value


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def save_posterior(
    path: Path,
    posterior: GaussianPosterior,
    metadata: dict[str, Any],
    samples: torch.Tensor | None = None,
) -> None:
    """``path`` (.safetensors): θ, the kept noise, the model's buffers (running statistics) and,
    for sample-based predictives, the weight set ``samples`` (M, d);
    ``path.with_suffix('.json')``: the subset's names and shapes plus ``metadata``."""
    tensors = {f"posterior.{k}": v.detach().contiguous() for k, v in posterior.state_dict().items()}
    tensors |= {f"buffer.{k}": v.detach().contiguous() for k, v in posterior.model.named_buffers()}
    meta = {
        "names": posterior.names,
        "shapes": [list(s) for s in posterior.shapes],
        "dim": posterior.dim,
        "rank": posterior.rank,
        **metadata,
    }
    if samples is not None:
        tensors["weight_set"] = samples.detach().contiguous()
        meta["weight_set_size"] = int(samples.shape[0])
    meta["sha256"] = tensor_hash(tensors)
    atomic_write_bytes(path, save(tensors, metadata={"sabma": json.dumps(meta)}))
    atomic_write_json(path.with_suffix(".json"), meta)


def load_posterior(path: Path, posterior: GaussianPosterior) -> dict[str, Any]:
    """Load a file written by :func:`save_posterior` into ``posterior`` (no code runs: safetensors).
    The subset must match, name for name; returns the metadata, with the weight set of a
    sample-based predictive under ``"weight_set"`` (a tensor) when the file holds one."""
    if not path.is_file():
        raise FileNotFoundError(f"posterior file {path} does not exist")
    retrain = "retrain the run (sabma train) to write it again"
    meta = read_json(path.with_suffix(".json"), retrain, ("names", "rank", "shapes"))
    shapes = [tuple(s) for s in meta.get("shapes", [])]
    if (
        meta["names"] != posterior.names
        or meta["rank"] != posterior.rank
        or shapes != posterior.shapes
    ):
        raise ValueError(
            f"{path} holds a posterior over another subset or rank "
            f"({len(meta['names'])} tensors, rank {meta['rank']}) than this model's "
            f"({len(posterior.names)} tensors, rank {posterior.rank})"
        )
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} is damaged ({err}); {retrain}") from None
    if "sha256" in meta and tensor_hash(tensors) != meta["sha256"]:
        raise ValueError(
            f"{path} is damaged (its tensors do not match the hash written with them); {retrain}"
        )
    state = {
        k.removeprefix("posterior."): v for k, v in tensors.items() if k.startswith("posterior.")
    }
    posterior.load_state_dict(state)
    buffers = dict(posterior.model.named_buffers())
    with torch.no_grad():
        for key, value in tensors.items():
            if key.startswith("buffer."):
                buffers[key.removeprefix("buffer.")].copy_(value)
    if "weight_set" in tensors:
        meta["weight_set"] = tensors["weight_set"].to(posterior.mean)
    return meta
