"""Finding the running statistics of normalization layers.

A SAM-type step runs the network twice on the same batch. The running mean/variance of
BatchNorm-like layers must be updated once per step, by the first pass only: the posterior runs
its perturbed pass on copies of these buffers, and SAM restores them after its second pass.
"""

from __future__ import annotations

import torch
from torch import nn


def updates_running_stats(model: nn.Module) -> bool:
    """Whether a forward pass of ``model`` would update any running statistics (a
    normalization layer in training mode that tracks them)."""
    return any(
        m.training and m.track_running_stats
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._NormBase)
    )


def running_stat_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{qualified name: buffer}`` of every normalization layer that tracks running statistics
    (running mean, running variance and ``num_batches_tracked``)."""
    found: dict[str, torch.Tensor] = {}
    for mod_name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
            prefix = f"{mod_name}." if mod_name else ""
            for name, buffer in module.named_buffers(recurse=False):
                if buffer is not None:
                    found[prefix + name] = buffer
    return found
