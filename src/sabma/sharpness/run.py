"""``sabma sharpness``: curvature of the training loss at a run's posterior samples.

For every sample w_s of the method's predictive (the mean for point estimates; draws of the
Gaussian; the kept weight set of ensembles and samplers; Laplace: its MAP, since laplace-torch's
predictive is not a weight set over the subset; MC dropout: its mean, since dropout masks are not
weights of the subset and the Hessian is taken with dropout off) the top-k Hessian eigenvalues
(Lanczos) and the Hutchinson trace of the training loss with respect to the Bayesian subset, on
the run's training split without augmentation, with the network in eval mode for every method.
The summary goes to ``metrics.json`` under ``"sharpness"``; failed solves are listed as failed,
never averaged in. With ``at_mean``, for a Gaussian posterior, the same measures are also taken at
its mean (``"at_mean"``, ``"mean_lambda_max"``): the like-for-like comparison with a point
estimate's optimum (other predictives have no such centre; the option leaves them as they are).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sabma.models import inputs
from sabma.pipeline.evaluate import LoadedRun, load_run
from sabma.runs.folder import add_section, read_metrics
from sabma.runs.lock import run_lock
from sabma.runs.report import refresh_report
from sabma.sharpness.hessian import Batches, hutchinson_trace, hvp_fn, top_eigenvalues


@dataclass
class SharpnessOptions:
    top_k: int = 5
    samples: int = 5  # M posterior samples (Gaussian predictives; weight sets: their first M)
    probes: int = 20  # Hutchinson probes per sample
    batch_size: int = 50
    images: int = 0  # the first N training images (0: the whole training split)
    tol: float = 1e-3  # Lanczos relative tolerance
    max_matvecs: int = 300
    seed: int = 0
    at_mean: bool = False  # Gaussian posteriors: also measure at the mean (the samples' centre)

    def __post_init__(self) -> None:
        for name in ("top_k", "samples", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"sharpness {name} must be >= 1, got {getattr(self, name)}")
        if self.probes < 2:
            raise ValueError(f"sharpness probes must be >= 2, got {self.probes}")
        if self.images < 0:
            raise ValueError(f"sharpness images must be >= 0, got {self.images}")


def training_batches(run: LoadedRun, options: SharpnessOptions) -> Batches:
    """The first ``options.images`` training images (all: 0), unaugmented, in fixed batches."""
    task = run.task
    n = options.images or len(task.y_train)
    device = run.posterior.device
    x = inputs.to_device(inputs.take(task.x_train, slice(0, n)), device)
    y = task.y_train[:n].to(device)
    return list(
        zip(inputs.batches(x, options.batch_size), y.split(options.batch_size), strict=True)
    )


def posterior_samples(run: LoadedRun, count: int, seed: int) -> Tensor:
    """(M, d) weights of the run's predictive at which curvature is measured."""
    posterior = run.posterior
    if run.method.point or run.method.name == "laplace":
        return posterior.mean.detach().unsqueeze(0)
    if run.weight_set is not None:
        weights = run.weight_set[:count]
        if bool((weights == weights[:1]).all()):  # MC dropout: S copies of the mean
            return weights[:1]
        return weights
    generator = torch.Generator().manual_seed(seed)
    return posterior.sample_weights(count, generator).detach()


def is_gaussian(run: LoadedRun) -> bool:
    """Whether the run's predictive is a Gaussian over the subset (samples around its mean)."""
    return not (run.method.point or run.method.name == "laplace" or run.weight_set is not None)


def measure_sharpness(
    run: LoadedRun, options: SharpnessOptions, progress: bool = False
) -> dict[str, Any]:
    posterior = run.posterior
    batches = training_batches(run, options)
    posterior.eval()
    weights = posterior_samples(run, options.samples, options.seed)
    per_sample = [
        _curvature(run, batches, w, options, options.seed + index)
        for index, w in enumerate(
            tqdm(weights, desc="sharpness", disable=not progress, leave=False)
        )
    ]
    solved = [s["eigenvalues"] for s in per_sample if s["eigenvalues"] is not None]
    ratios = [v[0] / v[-1] for v in solved if v[-1] > 0]
    at_mean: dict[str, Any] = {}
    if options.at_mean and is_gaussian(run):
        centre = _curvature(run, batches, posterior.mean.detach(), options, options.seed)
        values = centre["eigenvalues"]
        at_mean = {"at_mean": centre, "mean_lambda_max": None if values is None else values[0]}
    return {
        "top_k": options.top_k,
        "samples": len(per_sample),
        "images": sum(len(y) for _, y in batches),
        "probes": options.probes,
        "lambda_max": _mean([v[0] for v in solved]),
        "ratio_1_k": _mean(ratios),
        "trace": _mean([s["trace"] for s in per_sample]),
        "failed": [
            {"sample": i, "error": s["error"]} for i, s in enumerate(per_sample) if s["error"]
        ],
        "per_sample": per_sample,
        **at_mean,
    }


def _curvature(
    run: LoadedRun, batches: Batches, w: Tensor, options: SharpnessOptions, seed: int
) -> dict[str, Any]:
    """Top-k eigenvalues and the Hutchinson trace of the training loss's Hessian at ``w``."""
    start = time.perf_counter()
    posterior = run.posterior
    hvp = hvp_fn(posterior, batches, w)
    eigen = top_eigenvalues(
        hvp,
        posterior.dim,
        options.top_k,
        tol=options.tol,
        max_matvecs=options.max_matvecs,
        seed=seed,
    )
    trace = hutchinson_trace(hvp, posterior.dim, options.probes, seed=seed)
    return {
        "eigenvalues": eigen.values,
        "error": eigen.error,
        "trace": trace.mean,
        "trace_stderr": trace.stderr,
        "seconds": time.perf_counter() - start,
    }


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def sharpness_run(
    run_dir: Path, options: SharpnessOptions, progress: bool = True
) -> dict[str, Any]:
    """Measure and add the ``"sharpness"`` section to the run's metrics.json (atomically),
    holding the run's lock (:mod:`sabma.runs.lock`) throughout."""
    read_metrics(run_dir)  # a finished run, or FileNotFoundError before any work
    with run_lock(run_dir):
        result = measure_sharpness(load_run(run_dir), options, progress)
        add_section(run_dir, "sharpness", result)
        refresh_report(run_dir)
    return result


def write_sharpness_summary(folder: Path) -> None:
    """``sharpness.md``: mean ± std over seeds of λ_max, λ₁/λ_k and the trace, per method."""
    from sabma.runs.benchmark_folder import benchmark_runs, write_benchmark_report
    from sabma.runs.files import atomic_write_text
    from sabma.runs.tables import mean_std_table

    by_method: dict[str, list[dict[str, float]]] = {}
    seeds: dict[str, list[int]] = {}
    failures = []
    for run_dir in benchmark_runs(folder):
        metrics = read_metrics(run_dir)
        section = metrics.get("sharpness")
        if section is None:
            continue
        if section["failed"]:
            failures.append(f"{run_dir.relative_to(folder)}: {len(section['failed'])} failed")
        if section["lambda_max"] is None:
            continue
        ratio = section["ratio_1_k"]
        row = {
            "lambda_max": section["lambda_max"],
            "ratio_1_k": float("nan") if ratio is None else ratio,
            "trace": section["trace"],
        }
        if section.get("mean_lambda_max") is not None:
            row["mean_lambda_max"] = section["mean_lambda_max"]
        by_method.setdefault(metrics["method"], []).append(row)
        seeds.setdefault(metrics["method"], []).append(int(metrics["seed"]))
    if not by_method:
        raise ValueError(f"no run in {folder} has a sharpness section; run 'sabma sharpness'")
    columns: tuple[str, ...] = ("lambda_max", "ratio_1_k", "trace")
    if any("mean_lambda_max" in row for rows in by_method.values() for row in rows):
        columns += ("mean_lambda_max",)
    text = "# Sharpness at posterior samples: mean ± std over seeds\n\n" + mean_std_table(
        by_method, columns, seeds=seeds
    )
    if failures:
        text += "\n\nFailed solves (left out of the means): " + "; ".join(failures)
    atomic_write_text(folder / "sharpness.md", text + "\n")
    write_benchmark_report(folder)
