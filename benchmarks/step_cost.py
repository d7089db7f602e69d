"""Step time of SA-BMA against SGD, SAM and IVON, side by side in one process — as ratios.

    python -m benchmarks.step_cost [--cases EfficientNet,MLP] [--reps 20] [--device cpu|cuda]

Variants, each on its own copy of the network and the same Bayesian subset, batch 64:

* SGD (momentum 0.9), SAM (ρ = 0.05), IVON (the ``ivon-opt`` package, one draw per step);
* SA-BMA with the trainer's default variance: the natural-gradient rule with the sampled-label
  Fisher of the training inputs, refreshed every ``refresh_epochs`` epochs; timed between
  refreshes (σ and D fixed, as on all but one step in 16 epochs), the refresh timed apart;
* SA-BMA with the per-step (``reparam``) curvature: σ moves at every step, so the posterior's
  Woodbury pieces are formed at every step;
* lazy SA-BMA (default variance, ε formed every 5th step; a timed block is 5 steps, so its one
  fresh step in five is in every block).

One Fisher refresh of the default variance (256 training inputs, the trainer's
``fisher_examples``; per-example gradients + the factor) is timed apart (median of 3) and
reported in SAM steps: amortised over an interval of R steps it adds refresh / (R · SAM) to the
ratio — the demo refreshes every 64 steps (16 epochs of 4), a task of 1,600 examples at batch
64 every 400.

Cases: EfficientNet-Lite0 (ImageNet weights, eval-mode normalization) with the norm+head subset
at 32 and 64 px and with every parameter ("all") at 32 px; an MLP 784-1024-1024-10 with every
parameter Bayesian (d = 1.9·10⁶), K = 5 and K = 0, on labels of a fixed linear teacher.
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

from benchmarks.common import machine, train_only_subset, write_json
from sabma import SABMA, SAM, GaussianPosterior, LowRankGaussian, NaturalVariance

RANK = 5
LAZY_EVERY = 5
BLOCK = 5  # steps per timed block
REFRESH_INPUTS = 256
INTERVALS = (64, 400)  # steps between refreshes for the amortised columns


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


def flat_prior(posterior: GaussianPosterior) -> LowRankGaussian:
    """N(μ₀, I): a prior for the natural-gradient variance (its scale does not change the cost)."""
    mean = posterior.mean.detach().clone()
    return LowRankGaussian(mean, torch.ones_like(mean), mean.new_zeros(mean.numel(), 0))


def step_functions(
    base: nn.Module, subset: str, rank: int, x: Tensor, y: Tensor, autocast: Callable[[], Any]
) -> tuple[dict[str, Callable[[], None]], Callable[[], None]]:
    """name → one timed block of BLOCK steps of that variant; and one Fisher refresh."""
    import ivon

    names = ("sgd", "sam", "ivon", "sabma", "sabma_reparam", "sabma_lazy")
    models = {name: copy.deepcopy(base) for name in names}
    sgd = torch.optim.SGD(train_only_subset(models["sgd"], subset), lr=0.01, momentum=0.9)
    sam = SAM(train_only_subset(models["sam"], subset), lr=0.01, momentum=0.9, model=models["sam"])
    ivon_opt = ivon.IVON(train_only_subset(models["ivon"], subset), lr=0.01, ess=len(x))
    inputs = x.repeat(-(-REFRESH_INPUTS // len(x)), *([1] * (x.dim() - 1)))[:REFRESH_INPUTS]
    options: dict[str, Any] = {"lr": 0.01, "momentum": 0.9, "rho": 1.0}

    def sabma(name: str, curvature: str, **extra: Any) -> tuple[SABMA, GaussianPosterior]:
        posterior = GaussianPosterior(models[name], subset, rank=rank, init_std=0.01)
        data = inputs if curvature == "fisher" else None
        variance = NaturalVariance(
            ess=len(inputs), curvature=curvature, data=data, refresh_every=10**9
        )
        return SABMA(
            posterior, prior=flat_prior(posterior), variance=variance, **options, **extra
        ), posterior

    optimisers = {
        "sabma": sabma("sabma", "fisher"),
        "sabma_reparam": sabma("sabma_reparam", "reparam"),
        "sabma_lazy": sabma("sabma_lazy", "fisher", perturb_every=LAZY_EVERY),
    }

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

    def ivon_step() -> None:
        ivon_opt.zero_grad()
        with ivon_opt.sampled_params(train=True):
            closure_of(models["ivon"])()
        ivon_opt.step()

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
        "sam": two_step(sam, models["sam"]),
        "ivon": ivon_step,
        **{name: two_step(opt, post) for name, (opt, post) in optimisers.items()},
    }

    def block(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(BLOCK):
                fn()

        return run

    return {name: block(fn) for name, fn in single.items()}, optimisers["sabma"][
        0
    ].refresh_curvature


def step_section(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext
    if args.amp == "bf16":
        autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731
    effnet, weights = efficientnet()
    cases: list[tuple[str, nn.Module, str, int, Tensor]] = []
    for size in (32, 64):
        x = torch.randn(64, 3, size, size)
        cases.append(
            (f"EfficientNet-Lite0 norm+head, {size} px", effnet.eval(), "norm+head", RANK, x)
        )
    cases.append(
        ("EfficientNet-Lite0 all, 32 px", effnet.eval(), "all", RANK, torch.randn(64, 3, 32, 32))
    )
    for rank in (RANK, 0):
        cases.append(
            (f"MLP 784-1024-1024-10 all, K={rank}", mlp(), "all", rank, torch.randn(64, 784))
        )
    teacher = torch.randn(784, 10)
    wanted = [c for c in cases if any(k in c[0] for k in args.cases.split(","))]
    print(f"Step time, ms per step (median of {args.reps} blocks of {BLOCK} steps)\n")
    print(
        "| case | d | SGD | SAM | IVON | SA-BMA | SA-BMA/SAM | IVON/SAM | reparam SA-BMA/SAM | "
        "lazy SA-BMA/SGD | one refresh (SAM steps) | "
        + " | ".join(f"SA-BMA/SAM, refresh every {r} steps" for r in INTERVALS)
        + " |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(INTERVALS))
    rows = []
    for label, model, subset, rank, x in wanted:
        torch.manual_seed(0)
        model = copy.deepcopy(model).to(device)
        # labels a network can fit: a fixed linear teacher on the first 784 input values
        y = (x.flatten(1)[:, :784] @ teacher[: min(784, x[0].numel())]).argmax(1)
        x, y = x.to(device), y.to(device)
        fns, refresh = step_functions(model, subset, rank, x, y, autocast)
        d = sum(p.numel() for p in train_only_subset(copy.deepcopy(model), subset))
        times = time_side_by_side(fns, args.reps, args.warmup, device)
        refreshes = []
        for _ in range(3):
            synchronize(device)
            start = time.perf_counter()
            refresh()
            synchronize(device)
            refreshes.append(time.perf_counter() - start)
        per_step = {name: [t / BLOCK for t in ts] for name, ts in times.items()}
        med = {name: statistics.median(ts) for name, ts in per_step.items()}
        sam = med["sam"]
        refresh_s = statistics.median(refreshes)
        row: dict[str, Any] = {
            "case": label,
            "d": d,
            "rank": rank,
            **{name: summary(ts) for name, ts in per_step.items()},
            "refresh_s": refresh_s,
            "refresh_in_sam_steps": refresh_s / sam,
            "sabma_over_sam": med["sabma"] / sam,
            "ivon_over_sam": med["ivon"] / sam,
            "reparam_over_sam": med["sabma_reparam"] / sam,
            "lazy_over_sgd": med["sabma_lazy"] / med["sgd"],
            **{
                f"sabma_over_sam_refresh_every_{r}": (med["sabma"] + refresh_s / r) / sam
                for r in INTERVALS
            },
        }
        rows.append(row)
        ms = {name: row[name]["median_ms"] for name in per_step}
        print(
            f"| {label} | {d:,} | {ms['sgd']:.1f} | {ms['sam']:.1f} | {ms['ivon']:.1f} | "
            f"{ms['sabma']:.1f} ± {row['sabma']['iqr_ms'] / 2:.1f} | "
            f"**{row['sabma_over_sam']:.2f}** | {row['ivon_over_sam']:.2f} | "
            f"{row['reparam_over_sam']:.2f} | {row['lazy_over_sgd']:.2f} | "
            f"{refresh_s:.2f} s ({row['refresh_in_sam_steps']:.0f}) | "
            + " | ".join(f"{row[f'sabma_over_sam_refresh_every_{r}']:.2f}" for r in INTERVALS)
            + " |",
            flush=True,
        )
    print(f"(EfficientNet: {weights}; ± is half the interquartile range)\n")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", choices=["none", "bf16"], default="none")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--cases", default="EfficientNet,MLP")
    parser.add_argument(
        "--json", default=None, help="default: benchmarks/results/step_<device>.json"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    info = machine()
    print(f"machine: {info}\ndevice: {device}, amp: {args.amp}, {args.reps} repetitions\n")
    rows = step_section(args, device)
    path = args.json or f"benchmarks/results/step_{device.type}.json"
    write_json(path, {"machine": info, "args": vars(args), "step": rows})
    print(f"written {path}")


if __name__ == "__main__":
    main()
