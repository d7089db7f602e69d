"""Multi-process training on torch.distributed (torchrun), for every method of the shared loop.

Launched with ``torchrun --nproc_per_node N -m sabma train …`` (environment variables RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), each process joins a process group (gloo on CPU, nccl
on CUDA). Every process loads the same task and draws the same global batch order (same seed);
process r trains on the r-th slice of each global batch, and after *every* backward pass — both
passes of SAM-type steps, the one that forms ε and the one that updates — the gradients are
summed across processes with weights n_r / n, which is exactly the gradient of the global batch's
mean loss. The posterior noise is drawn from the same seeded generator on every process, so it is
identical everywhere without communication; θ therefore stays identical on all processes.
Normalization layers in train mode normalise with each process's own slice (as DDP without
SyncBatchNorm) and, as DDP's ``broadcast_buffers``, take rank 0's running statistics after each
step. Process 0 alone writes files and evaluates.

We all-reduce gradients ourselves instead of wrapping the network in
``torch.nn.parallel.DistributedDataParallel``: the trained tensors are the posterior's θ, not the
network's parameters (which DDP's hooks watch), and a SAM-type step needs two synchronised
backward passes per update.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor, nn


def launched() -> bool:
    """Whether this process was started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_device(device: torch.device) -> torch.device:
    """The device of this process: ``cuda:LOCAL_RANK`` for a CUDA run under torchrun."""
    if device.type == "cuda" and device.index is None and launched():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def init(device: torch.device) -> None:
    """Join the process group (once) when launched by torchrun."""
    if launched() and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def shard(indices: Tensor) -> tuple[Tensor, float]:
    """This process's slice of a global batch, and its weight n_r / n."""
    if world_size() == 1:
        return indices, 1.0
    if len(indices) < world_size():
        raise ValueError(
            f"a batch of {len(indices)} examples cannot be split over {world_size()} processes; "
            "raise optim.batch_size or use fewer processes"
        )
    part = indices.tensor_split(world_size())[rank()]
    return part, len(part) / len(indices)


def sum_gradients(params: list[Tensor], weight: float) -> None:
    """grad ← Σ_r weight_r · grad_r over the processes (one flat all-reduce)."""
    grads = [p.grad for p in params if p.grad is not None]
    if world_size() == 1 or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads]) * weight
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_buffers(model: nn.Module) -> None:
    """Rank 0's running statistics to every process (DDP's ``broadcast_buffers``)."""
    if world_size() == 1:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
