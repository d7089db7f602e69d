"""Speed of SA-BMA against SGD and SAM, posterior memory, and BMA prediction — as ratios.

    python -m benchmarks.speed [--device cpu|cuda] [--amp none|bf16] [--sections ...] [--quick]

Everything is measured side by side in one process: the variants of a section take turns, one
timed block each per repetition, so that machine noise hits all alike; the table gives the median
over repetitions after warm-up (and the interquartile range), and ratios of medians.

Sections:
  step    step time of SGD, SAM, IVON and SA-BMA (:mod:`benchmarks.step_cost`).
  memory  the posterior's state in floats per Bayesian parameter at d = 10⁷, K = 5, and the
          largest tensor any operation of one SA-BMA step creates (no d × d anywhere).
  bma     S = 30 BMA on the norm+head subset against 30 plain forward passes (throughput).
  prefix  S = 30 BMA with subset "head" and "last block + head" against ONE plain forward pass.
"""

from __future__ import annotations

import argparse
import copy
import statistics
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.functional import cross_entropy
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.common import machine, write_json
from benchmarks.step_cost import (
    RANK,
    efficientnet,
    flat_prior,
    step_section,
    summary,
    time_side_by_side,
)
from sabma import (
    SABMA,
    GaussianPosterior,
    NaturalVariance,
)
from sabma.predict.bma import bma_log_probs

LAST_BLOCK_AND_HEAD = r"^_blocks\.15\.|^_conv_head\.|^_bn1\.|^_fc\."


# --- memory --------------------------------------------------------------------------------
class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operation creates."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0
        self.op = ""

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, Tensor) and t.numel() > self.largest:
                self.largest, self.op = t.numel(), str(func)
        return out


def memory_section(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    torch.manual_seed(0)
    width = 10_000
    model = nn.Linear(1_000, width).to(device)  # d = 10,010,000
    posterior = GaussianPosterior(model, "all", rank=RANK)
    d = posterior.dim
    state = sum(t.numel() for t in posterior.state_dict().values())
    opt = SABMA(
        posterior,
        lr=0.01,
        momentum=0.9,
        rho=1.0,
        prior=flat_prior(posterior),
        variance=NaturalVariance(ess=8, curvature="reparam"),
    )
    x, y = torch.randn(8, 1_000, device=device), torch.randint(0, width, (8,), device=device)

    def closure() -> Tensor:
        loss = cross_entropy(posterior(x), y)
        loss.backward()
        return loss

    opt.step(closure)  # creates the momentum buffers
    opt.zero_grad()
    with LargestTensor() as probe:
        opt.step(closure)
    momentum = sum(
        t.numel() for s in opt.state.values() for t in s.values() if isinstance(t, Tensor)
    )
    row = {
        "d": d,
        "rank": RANK,
        "posterior_state_floats": state,
        "posterior_state_per_d": state / d,
        "target_per_d": RANK + 3,
        "optimizer_momentum_per_d": momentum / d,
        "largest_tensor_in_step": probe.largest,
        "largest_tensor_per_d": probe.largest / d,
        "largest_tensor_op": probe.op,
    }
    print(
        f"posterior state at d = {d:,}, K = {RANK}: {state:,} floats = {state / d:.6f}·d "
        f"(target ≤ (K+3)·d = {RANK + 3}·d; μ, log σ, z₁ and D, plus the K entries of z₂); "
        f"SGD momentum over θ: {momentum / d:.1f}·d (optimiser state, as for any optimiser "
        f"of θ); the largest tensor one SA-BMA step creates: {probe.largest:,} elements "
        f"= {probe.largest / d:.2f}·d ({probe.op}); a d×d matrix would be {d * d:.1e}.\n",
        flush=True,
    )
    return row


# --- BMA -----------------------------------------------------------------------------------
def bma_variants(
    model: nn.Module, subset: str, passes: int, batch: int, device: torch.device
) -> tuple[int, dict[str, Callable[[], Any]]]:
    """The plain reference (``passes`` forward passes) and the three BMA variants, S = 30."""
    posterior = GaussianPosterior(model, subset, rank=RANK, init_std=0.01).eval()
    weights = posterior.sample_weights(30).detach()
    x = torch.randn(batch, 3, 32, 32, device=device)

    @torch.no_grad()
    def plain() -> None:
        for _ in range(passes):
            model(x)

    return posterior.dim, {
        "plain": plain,
        "loop": lambda: bma_log_probs(
            posterior, x, weights=weights, cache_prefix=False, vectorize=False
        ),
        "loop_cached": lambda: bma_log_probs(posterior, x, weights=weights, vectorize=False),
        "vmap_cached": lambda: bma_log_probs(posterior, x, weights=weights, vectorize=True),
    }


def bma_section(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    effnet, _ = efficientnet()
    rows = []
    for subset, reference in (
        ("norm+head", "30 forward passes"),
        ("head", "1 forward pass"),
        (LAST_BLOCK_AND_HEAD, "1 forward pass"),
    ):
        torch.manual_seed(0)
        model = copy.deepcopy(effnet).to(device).eval()
        passes = 30 if reference.startswith("30") else 1
        d, variants = bma_variants(model, subset, passes, args.bma_batch, device)
        times = time_side_by_side(variants, args.reps, args.warmup, device)
        med = {name: statistics.median(ts) for name, ts in times.items()}
        label = "last block + head" if subset == LAST_BLOCK_AND_HEAD else subset
        row: dict[str, Any] = {
            "subset": label,
            "d": d,
            "reference": reference,
            **{name: summary(ts) for name, ts in times.items()},
        }
        for name in ("loop", "loop_cached", "vmap_cached"):
            row[f"{name}_over_reference"] = med[name] / med["plain"]
        rows.append(row)
        cells = [
            f"{row[name]['median_ms']:.0f} ({row[f'{name}_over_reference']:.2f}×)"
            for name in ("loop", "loop_cached", "vmap_cached")
        ]
        print(
            f"| {label} | {d:,} | {reference}: {row['plain']['median_ms']:.0f} ms | "
            + " | ".join(cells)
            + " |",
            flush=True,
        )
    print(
        f"(S = 30 draws, batch {args.bma_batch} at 32 px, eval mode; ms and × the reference; "
        "throughput against 30 plain passes is the inverse of the first row's ratio)\n"
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", choices=["none", "bf16"], default="none")
    parser.add_argument("--sections", default="step,memory,bma")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--bma-batch", type=int, default=64)
    parser.add_argument(
        "--cases", default="EfficientNet,MLP", help="step cases whose label contains one of these"
    )
    parser.add_argument(
        "--quick", action="store_true", help="3 repetitions, 1 warm-up (a smoke run)"
    )
    parser.add_argument(
        "--json", default=None, help="default: benchmarks/results/speed_<device>.json"
    )
    args = parser.parse_args()
    if args.quick:
        args.reps, args.warmup = 3, 1
    device = torch.device(args.device)
    sections = set(args.sections.split(","))
    info = machine()
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    print(f"machine: {info}")
    print(f"device: {device}, amp: {args.amp}, {args.reps} repetitions, {args.warmup} warm-up\n")
    result: dict[str, Any] = {"machine": info, "args": vars(args)}
    if "step" in sections:
        result["step"] = step_section(args, device)
    if "memory" in sections:
        result["memory"] = memory_section(args, device)
    if "bma" in sections:
        print("BMA prediction, ms per batch (× the reference)\n")
        print("| subset | d | reference | loop | loop, prefix cached | vmap, prefix cached |")
        print("|---|---|---|---|---|---|")
        result["bma"] = bma_section(args, device)
    path = (
        args.json
        or f"benchmarks/results/speed_{device.type}{'_bf16' if args.amp == 'bf16' else ''}.json"
    )
    write_json(path, result)
    print(f"written {path}")


if __name__ == "__main__":
    main()
