"""Loss-landscape slices around the posterior mean (Li et al., 2018).

L(μ + α d₁ [+ β d₂]) on the non-augmented training split, network in eval mode, along
- the top Hessian eigenvectors at μ (unit vectors scaled to ‖μ‖), and
- random filter-normalised directions: Gaussian, then each parameter tensor of the subset rescaled
  to the norm of the same tensor of μ — per output row ("filter") for matrices and convolution
  kernels, as a whole for vectors (Li et al. zero the normalization parameters' directions; here
  they are most of the subset, so they are normalised like the rest).
The grid spans α, β ∈ [−span, span]. Written to ``landscape.json`` and ``landscape.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sabma.pipeline.evaluate import load_run
from sabma.posterior.gaussian import GaussianPosterior
from sabma.runs.figures import pyplot, save_figure
from sabma.runs.files import atomic_write_json
from sabma.runs.folder import METRICS
from sabma.runs.report import refresh_report
from sabma.sharpness.hessian import Batches, hvp_fn, loss_at, top_eigenvalues
from sabma.sharpness.run import SharpnessOptions, training_batches


def filter_normalised(
    posterior: GaussianPosterior, w: Tensor, generator: torch.Generator
) -> Tensor:
    """A random direction with each tensor (each row of a matrix/kernel) at the norm of w's."""
    direction = torch.randn(w.shape, generator=generator, dtype=w.dtype)
    d_parts, w_parts = posterior.unflatten(direction), posterior.unflatten(w)
    for name, d in d_parts.items():
        ref = w_parts[name]
        if d.dim() >= 2:
            scale = ref.flatten(1).norm(dim=1) / d.flatten(1).norm(dim=1).clamp_min(1e-12)
            d.mul_(scale.view(-1, *([1] * (d.dim() - 1))))
        else:
            d.mul_(ref.norm() / d.norm().clamp_min(1e-12))
    return direction


def slices(
    posterior: GaussianPosterior,
    batches: Batches,
    options: SharpnessOptions,
    span: float = 0.1,
    points: int = 21,
    grid: int = 11,
) -> dict[str, Any]:
    if points < 3 or grid < 3:
        raise ValueError("landscape slices need at least 3 points per axis")
    loss = loss_at(posterior, batches)
    mu = posterior.mean.detach().clone()
    scale = float(mu.norm())
    eigen = top_eigenvalues(
        hvp_fn(posterior, batches, mu),
        posterior.dim,
        2,
        tol=options.tol,
        max_matvecs=options.max_matvecs,
        seed=options.seed,
        vectors=True,
    )
    generator = torch.Generator().manual_seed(options.seed)
    directions: dict[str, Tensor] = {
        "random 1": filter_normalised(posterior, mu, generator),
        "random 2": filter_normalised(posterior, mu, generator),
    }
    if eigen.vectors is not None:
        directions["eigen 1"] = eigen.vectors[0].to(mu) * scale
        directions["eigen 2"] = eigen.vectors[1].to(mu) * scale
    alphas = torch.linspace(-span, span, points)
    betas = torch.linspace(-span, span, grid)
    with torch.no_grad():
        one_d = {
            name: [float(loss(mu + a * d)) for a in alphas]
            for name, d in directions.items()
            if name.endswith("1")
        }
        two_d = {}
        for kind in ("random", "eigen"):
            if f"{kind} 1" in directions:
                d1, d2 = directions[f"{kind} 1"], directions[f"{kind} 2"]
                two_d[kind] = [[float(loss(mu + a * d1 + b * d2)) for b in betas] for a in betas]
    return {
        "span": span,
        "alphas": alphas.tolist(),
        "grid": betas.tolist(),
        "eigenvalues": eigen.values,
        "eigen_error": eigen.error,
        "one_d": one_d,
        "two_d": two_d,
    }


def analyze_landscape(
    run_dir: Path, options: SharpnessOptions, span: float = 0.1, points: int = 21, grid: int = 11
) -> dict[str, Any]:
    run = load_run(run_dir)
    run.posterior.eval()
    result = slices(run.posterior, training_batches(run, options), options, span, points, grid)
    atomic_write_json(run_dir / "landscape.json", result)
    _plot(run_dir / "landscape.png", result)
    if (run_dir / METRICS).is_file():
        refresh_report(run_dir)
    return result


def _plot(path: Path, result: dict[str, Any]) -> None:
    plt = pyplot()

    panels = 1 + len(result["two_d"])
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 3.4), dpi=120, squeeze=False)
    ax = axes[0][0]
    for name, values in result["one_d"].items():
        ax.plot(result["alphas"], values, label=name.replace(" 1", " direction"))
    ax.set_xlabel("α (in units of ‖μ‖)")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")  # the eigen direction rises orders of magnitude faster
    ax.legend(fontsize=8)
    for ax, (kind, values) in zip(axes[0][1:], result["two_d"].items(), strict=True):
        grid = result["grid"]
        contour = ax.contourf(grid, grid, torch.tensor(values).T.numpy(), levels=20, cmap="viridis")
        fig.colorbar(contour, ax=ax)
        ax.plot([0], [0], "r+")
        ax.set_title(f"{kind} directions")
    save_figure(fig, path)
