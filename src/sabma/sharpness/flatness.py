"""Flat-vs-sharp BMA: do the flattest posterior samples make the better model average?

M samples of a run's predictive are ranked by λ_max of the training-loss Hessian (Lanczos, the top
eigenvalue only). For m = 1..M the BMA of the m flattest, the m sharpest and m random samples (the
mean over ``repeats`` random draws) is scored on the test split. Written to ``flatness.json`` and
``flatness.png`` in the run directory.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sabma.metrics import classification_metrics
from sabma.models import inputs
from sabma.pipeline.evaluate import LoadedRun, load_run
from sabma.runs.figures import pyplot, save_figure
from sabma.runs.files import atomic_write_json
from sabma.runs.folder import METRICS
from sabma.runs.report import refresh_report
from sabma.sharpness.hessian import hvp_fn, top_eigenvalues
from sabma.sharpness.run import SharpnessOptions, training_batches

ORDERS = ("flat", "random", "sharp")


def _sample_probs(run: LoadedRun, weights: Tensor) -> Tensor:
    """softmax outputs of every sample on the test split, (M, n, classes)."""
    posterior, x = run.posterior, run.task.x_test
    posterior.eval()
    out = []
    with torch.no_grad():
        for w in weights:
            parts = [
                torch.softmax(
                    inputs.call(posterior.forward_with, inputs.to_device(b, posterior.device), w),
                    -1,
                ).cpu()
                for b in inputs.batches(x, run.cfg.eval.batch_size)
            ]
            out.append(torch.cat(parts))
    return torch.stack(out)


def flat_vs_sharp(
    run: LoadedRun,
    samples: int,
    options: SharpnessOptions,
    repeats: int = 10,
    progress: bool = False,
) -> dict[str, Any]:
    """λ_max per sample and the BMA metrics of the flattest / random / sharpest m samples."""
    if run.method.point:
        raise ValueError(f"method {run.method.name} is a point estimate: no samples to rank")
    if run.weight_set is not None:
        weights = run.weight_set[:samples]
    else:
        generator = torch.Generator().manual_seed(options.seed)
        weights = run.posterior.sample_weights(samples, generator).detach()
    if len(weights) < 2:
        raise ValueError("flat-vs-sharp needs at least 2 samples")
    task = run.task
    batches = training_batches(run, options)
    run.posterior.eval()
    lam: list[float | None] = []
    for index, w in enumerate(tqdm(weights, desc="λ_max", disable=not progress, leave=False)):
        eigen = top_eigenvalues(
            hvp_fn(run.posterior, batches, w),
            run.posterior.dim,
            1,
            tol=options.tol,
            max_matvecs=options.max_matvecs,
            seed=options.seed + index,
        )
        lam.append(eigen.values[0] if eigen.values is not None else None)
    kept = [i for i, v in enumerate(lam) if v is not None]
    if len(kept) < 2:
        raise ValueError("fewer than 2 samples have a converged λ_max; raise --max-matvecs")
    probs = _sample_probs(run, weights[kept])
    by_flatness = sorted(range(len(kept)), key=lambda i: float(lam[kept[i]] or 0.0))
    generator = torch.Generator().manual_seed(options.seed + 1)
    randoms = [torch.randperm(len(kept), generator=generator).tolist() for _ in range(repeats)]
    curves: dict[str, list[dict[str, float]]] = {o: [] for o in ORDERS}
    y = task.y_test
    for m in range(1, len(kept) + 1):
        curves["flat"].append(classification_metrics(probs[by_flatness[:m]].mean(0), y))
        curves["sharp"].append(classification_metrics(probs[by_flatness[::-1][:m]].mean(0), y))
        draws = [classification_metrics(probs[order[:m]].mean(0), y) for order in randoms]
        curves["random"].append({k: sum(d[k] for d in draws) / repeats for k in draws[0]})
    return {
        "lambda_max": lam,
        "failed": [i for i, v in enumerate(lam) if v is None],
        "m": list(range(1, len(kept) + 1)),
        "curves": curves,
    }


def analyze_flatness(
    run_dir: Path, samples: int, options: SharpnessOptions, progress: bool = True
) -> dict[str, Any]:
    result = flat_vs_sharp(load_run(run_dir), samples, options, progress=progress)
    atomic_write_json(run_dir / "flatness.json", result)
    _plot(run_dir / "flatness.png", result)
    if (run_dir / METRICS).is_file():
        refresh_report(run_dir)
    return result


def _plot(path: Path, result: dict[str, Any]) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), dpi=120)
    colours = {"flat": "tab:green", "random": "tab:grey", "sharp": "tab:red"}
    for ax, metric in zip(axes, ("acc", "nll", "ece"), strict=True):
        for order in ORDERS:
            ax.plot(
                result["m"],
                [c[metric] for c in result["curves"][order]],
                marker="o",
                markersize=3,
                color=colours[order],
                label=f"{order}-first",
            )
        ax.set_xlabel("samples in the BMA (m)")
        ax.set_title(metric.upper())
    axes[0].legend(fontsize=8)
    finite = [v for v in result["lambda_max"] if v is not None and math.isfinite(v)]
    fig.suptitle(
        f"BMA of the flattest / random / sharpest m samples "
        f"(λ_max {min(finite):.3g}–{max(finite):.3g})",
        fontsize=9,
    )
    save_figure(fig, path)
