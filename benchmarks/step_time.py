"""Step time of SA-BMA against SGD and SAM on a small CNN with BatchNorm, side by side.

All three train the same Bayesian subset (norm + head) of copies of one network; steps are
interleaved (SGD, SAM, SA-BMA, SGD, …) so that machine noise hits all alike. Reports the median
over repetitions after warm-up, and the ratios of medians.

    python -m benchmarks.step_time [--reps 30] [--batch 64] [--size 32] [--rank 5]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.functional import cross_entropy

from benchmarks.common import machine, write_json
from sabma import SABMA, SAM, GaussianPosterior, select_parameters


def small_cnn(classes: int = 10) -> nn.Sequential:
    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]

    return nn.Sequential(
        *block(3, 32),
        *block(32, 64),
        *block(64, 128),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, classes),
    )


def subset_params(model: nn.Module) -> list[nn.Parameter]:
    names = set(select_parameters(model, "norm+head"))
    params = dict(model.named_parameters())
    model.requires_grad_(False)
    chosen = [params[n] for n in params if n in names]
    for p in chosen:
        p.requires_grad_(True)
    return chosen


def make_steps(rank: int, x: torch.Tensor, y: torch.Tensor) -> dict[str, Callable[[], None]]:
    base = small_cnn().train()
    sgd_model, sam_model, sabma_model = (copy.deepcopy(base) for _ in range(3))
    sgd = torch.optim.SGD(subset_params(sgd_model), lr=0.01, momentum=0.9)
    sam = SAM(subset_params(sam_model), lr=0.01, momentum=0.9, rho=0.05, model=sam_model)
    posterior = GaussianPosterior(sabma_model, "norm+head", rank=rank)
    sabma = SABMA(posterior, lr=0.01, momentum=0.9, rho=0.05)

    def sgd_step() -> None:
        sgd.zero_grad()
        cross_entropy(sgd_model(x), y).backward()
        sgd.step()

    def closure_of(forward: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], torch.Tensor]:
        def closure() -> torch.Tensor:
            loss = cross_entropy(forward(x), y)
            loss.backward()
            return loss

        return closure

    sam_closure, sabma_closure = closure_of(sam_model), closure_of(posterior)

    def sam_step() -> None:
        sam.zero_grad()
        sam.step(sam_closure)

    def sabma_step() -> None:
        sabma.zero_grad()
        sabma.step(sabma_closure)

    return {"sgd": sgd_step, "sam": sam_step, "sabma": sabma_step}


def measure(reps: int, warmup: int, batch: int, size: int, rank: int) -> dict[str, float]:
    torch.manual_seed(0)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))
    steps = make_steps(rank, x, y)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for rep in range(warmup + reps):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if rep >= warmup:
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    spreads = {f"{name}_iqr": _iqr(t) for name, t in times.items()}
    return {
        **{f"{n}_ms": 1e3 * m for n, m in medians.items()},
        **{k: 1e3 * v for k, v in spreads.items()},
        "sabma_over_sgd": medians["sabma"] / medians["sgd"],
        "sabma_over_sam": medians["sabma"] / medians["sam"],
        "sam_over_sgd": medians["sam"] / medians["sgd"],
    }


def _iqr(values: list[float]) -> float:
    q = statistics.quantiles(values, n=4)
    return q[2] - q[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--rank", type=int, nargs="+", default=[0, 5])
    parser.add_argument("--json", default="benchmarks/results/step_time.json")
    args = parser.parse_args()
    rows = []
    print(f"machine: {machine()}")
    print(
        f"small CNN with BatchNorm, subset norm+head, batch {args.batch}, {args.size} px, "
        f"median of {args.reps} steps after {args.warmup} warm-up (IQR in brackets)\n"
    )
    print("| K | SGD ms | SAM ms | SA-BMA ms | SA-BMA/SGD | SA-BMA/SAM | SAM/SGD |")
    print("|---|---|---|---|---|---|---|")
    for rank in args.rank:
        r = measure(args.reps, args.warmup, args.batch, args.size, rank)
        rows.append({"rank": rank, **r})
        print(
            f"| {rank} | {r['sgd_ms']:.1f} [{r['sgd_iqr']:.1f}] | {r['sam_ms']:.1f} "
            f"[{r['sam_iqr']:.1f}] | {r['sabma_ms']:.1f} [{r['sabma_iqr']:.1f}] | "
            f"{r['sabma_over_sgd']:.3f} | {r['sabma_over_sam']:.3f} | {r['sam_over_sgd']:.3f} |"
        )
    write_json(args.json, {"machine": machine(), "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
