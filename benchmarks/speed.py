"""Speed of SA-BMA against SGD and SAM, posterior memory, and BMA prediction — as ratios.

    python -m benchmarks.speed [--device cpu|cuda] [--amp none|bf16] [--sections ...] [--quick]

Everything is measured side by side in one process: the variants of a section take turns, one
timed block each per repetition, so that machine noise hits all alike; the table gives the median
over repetitions after warm-up (and the interquartile range), and ratios of medians.

Sections:
  step    step time of SGD, SAM, SA-BMA (per-step curvature), lazy SA-BMA (ε every 5 steps) and
          SA-BMA with the trainer's default Fisher curvature refreshed once a block (an epoch's
          worth: 5 batches of inputs, amortised over the block's 5 steps) — EfficientNet-Lite0
          with the norm+head subset at 32 and 64 px, batch 64; an MLP with ~1.9 M Bayesian
          parameters (K = 5, and K = 0 to show where the time goes). A block is 5 steps, so
          the lazy variant's one fresh step in five is in every block.
  memory  the posterior's state in floats per Bayesian parameter at d = 10⁷, K = 5, and the
          largest tensor any operation of one SA-BMA step creates (no d × d anywhere).
  bma     S = 30 BMA on the norm+head subset against 30 plain forward passes (throughput).
  prefix  S = 30 BMA with subset "head" and "last block + head" against ONE plain forward pass.
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.functional import cross_entropy
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.common import machine, write_json
from sabma import (
    SABMA,
    SAM,
    GaussianPosterior,
    LowRankGaussian,
    NaturalVariance,
    select_parameters,
)
from sabma.predict.bma import bma_log_probs

RANK = 5
LAZY_EVERY = 5
BLOCK = 5  # steps per timed block
LAST_BLOCK_AND_HEAD = r"^_blocks\.15\.|^_conv_head\.|^_bn1\.|^_fc\."


# --- helpers ---------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_side_by_side(
    fns: dict[str, Callable[[], Any]], reps: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per call of each fn, the fns taking turns in a shuffled order; warm-up calls
    dropped."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    order = random.Random(0)
    names = list(fns)
    for rep in range(warmup + reps):
        order.shuffle(names)  # no variant always runs right after another
        for name in names:
            fn = fns[name]
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            if rep >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def summary(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=4)
    return {"median_ms": 1e3 * statistics.median(values), "iqr_ms": 1e3 * (q[2] - q[0])}


def efficientnet(classes: int = 10) -> tuple[nn.Module, str]:
    """EfficientNet-Lite0 with a new head; ImageNet weights where installed (timings do not
    depend on the values)."""
    try:
        from sabma.models.registry import build_backbone

        backbone = build_backbone("efficientnet_lite0", classes)
        return backbone.model, "ImageNet weights"
    except (ValueError, ImportError, FileNotFoundError):
        from efficientnet_lite_pytorch import EfficientNet

        model = EfficientNet.from_name("efficientnet-lite0")
        model._fc = nn.Linear(model._fc.in_features, classes)
        return model, "random weights (weights package not installed)"


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10)
    )


def train_subset(model: nn.Module, subset: str) -> list[nn.Parameter]:
    names = set(select_parameters(model, subset))
    model.requires_grad_(False)
    chosen = [p for n, p in model.named_parameters() if n in names]
    for p in chosen:
        p.requires_grad_(True)
    return chosen


def flat_prior(posterior: GaussianPosterior) -> LowRankGaussian:
    """N(μ₀, I): a prior for the natural-gradient variance (its scale does not change the cost)."""
    mean = posterior.mean.detach().clone()
    return LowRankGaussian(mean, torch.ones_like(mean), mean.new_zeros(mean.numel(), 0))


# --- step ----------------------------------------------------------------------------------
def step_functions(
    base: nn.Module, subset: str, rank: int, x: Tensor, y: Tensor, autocast: Callable[[], Any]
) -> dict[str, Callable[[], None]]:
    names = ("sgd", "sam", "sabma", "sabma_lazy", "sabma_fisher")
    models = {name: copy.deepcopy(base) for name in names}
    sgd = torch.optim.SGD(train_subset(models["sgd"], subset), lr=0.01, momentum=0.9)
    sam_model = models["sam"]
    sam = SAM(train_subset(sam_model, subset), lr=0.01, momentum=0.9, rho=0.05, model=sam_model)
    posteriors = {name: GaussianPosterior(models[name], subset, rank=rank) for name in names[2:]}
    # the library's default step: method.sabma.rho and the natural-gradient variance, here with the
    # per-step (reparam) curvature; the trainer's Fisher refresh is a separate, once-an-epoch cost
    options: dict[str, Any] = {"lr": 0.01, "momentum": 0.9, "rho": 1.0}
    sabma = SABMA(
        posteriors["sabma"],
        prior=flat_prior(posteriors["sabma"]),
        variance=NaturalVariance(ess=len(x), curvature="reparam"),
        **options,
    )
    lazy = SABMA(
        posteriors["sabma_lazy"],
        prior=flat_prior(posteriors["sabma_lazy"]),
        variance=NaturalVariance(ess=len(x), curvature="reparam"),
        perturb_every=LAZY_EVERY,
        **options,
    )
    # the trainer's default: the sampled-label Fisher of the training inputs (and the factor)
    # refreshed once an epoch — here once a block, on BLOCK batches' worth of inputs
    fisher = SABMA(
        posteriors["sabma_fisher"],
        prior=flat_prior(posteriors["sabma_fisher"]),
        variance=NaturalVariance(
            ess=BLOCK * len(x),
            curvature="fisher",
            inputs=x.repeat(BLOCK, *([1] * (x.dim() - 1))),
            refresh_every=BLOCK,
            max_examples=BLOCK * len(x),
        ),
        **options,
    )

    def closure_of(forward: Callable[[Tensor], Tensor]) -> Callable[[], Tensor]:
        def closure() -> Tensor:
            with autocast():
                loss = cross_entropy(forward(x), y)
            loss.backward()
            return loss

        return closure

    def sgd_step() -> None:
        sgd.zero_grad()
        closure_of(models["sgd"])()
        sgd.step()

    def two_step(
        opt: torch.optim.Optimizer, forward: Callable[[Tensor], Tensor]
    ) -> Callable[[], None]:
        closure = closure_of(forward)

        def run() -> None:
            opt.zero_grad()
            opt.step(closure)

        return run

    single = {
        "sgd": sgd_step,
        "sam": two_step(sam, sam_model),
        "sabma": two_step(sabma, posteriors["sabma"]),
        "sabma_lazy": two_step(lazy, posteriors["sabma_lazy"]),
        "sabma_fisher": two_step(fisher, posteriors["sabma_fisher"]),
    }

    def block(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(BLOCK):
                fn()

        return run

    return {name: block(fn) for name, fn in single.items()}


def step_section(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext
    if args.amp == "bf16":
        autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731
    rows = []
    effnet, weights = efficientnet()
    cases: list[tuple[str, nn.Module, str, int, Tensor]] = []
    for size in (32, 64):
        x = torch.randn(64, 3, size, size)
        cases.append(
            (f"EfficientNet-Lite0 norm+head, {size} px", effnet.eval(), "norm+head", RANK, x)
        )
    for rank in (RANK, 0):
        cases.append(
            (f"MLP 784-1024-1024-10 all, K={rank}", mlp(), "all", rank, torch.randn(64, 784))
        )
    teacher = torch.randn(784, 10)
    wanted = [c for c in cases if any(k in c[0] for k in args.cases.split(","))]
    for label, model, subset, rank, x in wanted:
        torch.manual_seed(0)
        model = copy.deepcopy(model).to(device)
        # labels a network can fit: a fixed linear teacher on the first 784 input values
        y = (x.flatten(1)[:, :784] @ teacher[: min(784, x[0].numel())]).argmax(1)
        x, y = x.to(device), y.to(device)
        d = sum(
            p.numel()
            for n, p in model.named_parameters()
            if n in set(select_parameters(model, subset))
        )
        fns = step_functions(model, subset, rank, x, y, autocast)
        try:
            times = time_side_by_side(fns, args.reps, args.warmup, device)
        except (FloatingPointError, RuntimeError) as err:
            print(f"| {label} | {d:,} | failed: {type(err).__name__}: {err} |", flush=True)
            rows.append({"case": label, "d": d, "rank": rank, "error": repr(err)})
            continue
        per_step = {name: [t / BLOCK for t in ts] for name, ts in times.items()}
        med = {name: statistics.median(ts) for name, ts in per_step.items()}
        row = {
            "case": label,
            "d": d,
            "rank": rank,
            **{name: summary(ts) for name, ts in per_step.items()},
            "sabma_over_sgd": med["sabma"] / med["sgd"],
            "sabma_over_sam": med["sabma"] / med["sam"],
            "sam_over_sgd": med["sam"] / med["sgd"],
            "lazy_over_sgd": med["sabma_lazy"] / med["sgd"],
            "fisher_over_sam": med["sabma_fisher"] / med["sam"],
        }
        rows.append(row)
        print(
            f"| {label} | {d:,} | {row['sgd']['median_ms']:.1f} | {row['sam']['median_ms']:.1f} | "
            f"{row['sabma']['median_ms']:.1f} ± {row['sabma']['iqr_ms'] / 2:.1f} | "
            f"{row['sabma_lazy']['median_ms']:.1f} | {row['sabma_over_sgd']:.3f} | "
            f"**{row['sabma_over_sam']:.3f}** | {row['sam_over_sgd']:.3f} | "
            f"**{row['lazy_over_sgd']:.3f}** | {row['sabma_fisher']['median_ms']:.1f} | "
            f"**{row['fisher_over_sam']:.3f}** |",
            flush=True,
        )
    print(f"(EfficientNet: {weights}; ± is half the interquartile range)\n")
    return rows


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
    opt = SABMA(posterior, lr=0.01, momentum=0.9, rho=1.0, ess=8, prior=flat_prior(posterior))
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
        print(f"Step time, ms per step (median of {args.reps} blocks of {BLOCK} steps)\n")
        print(
            "| case | d | SGD | SAM | SA-BMA | lazy SA-BMA (k=5) | SA-BMA/SGD | SA-BMA/SAM "
            "| SAM/SGD | lazy/SGD | SA-BMA + Fisher refresh | (SA-BMA + Fisher)/SAM |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
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
