"""Memory of a training variant: the state its optimiser keeps (counted), and the peak resident
size of a process that trains with it (measured, one child process per variant)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

_STATUS = Path("/proc/self/status")


def _status_kb(field: str) -> float:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    raise RuntimeError(f"{field} not in {_STATUS}")


def _tensors(obj: Any) -> list[Tensor]:
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, list | tuple):
        return [t for v in obj for t in _tensors(v)]
    return []


def state_bytes(optimizer: Any) -> int:
    """Bytes of the tensors an optimiser keeps between steps beyond the network's own parameters:
    its ``state_dict`` (momenta, curvature) and, for SA-BMA, the posterior (μ, log σ, D, noise).
    Each storage is counted once."""
    tensors = _tensors(optimizer.state_dict())
    posterior = getattr(optimizer, "posterior", None)
    if posterior is not None:
        tensors += _tensors(dict(posterior.state_dict()))
    seen: dict[int, int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def peak_resident_mb() -> float:
    """This process's peak resident size so far (Linux VmHWM), MB."""
    return _status_kb("VmHWM") / 1024


def main() -> None:
    """A child of ``benchmarks.scaling --memory``: train one variant for two epochs (SA-BMA's
    first update refreshes its Fisher) and print the process's peak resident MB as JSON."""
    import argparse
    import json

    from benchmarks.scaling import trainers, training_data

    parser = argparse.ArgumentParser()
    parser.add_argument("variant")
    parser.add_argument("subset")
    parser.add_argument("--shots", type=int, required=True)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--text", action="store_true")
    args = parser.parse_args()
    loader = training_data(args.shots, args.resolution, args.text)
    epochs, _ = trainers(loader, args.subset, args.text, names=(args.variant,))
    for _ in range(2):
        epochs[args.variant]()
    print(json.dumps({"peak_mb": peak_resident_mb()}))


if __name__ == "__main__":
    main()
