"""Learning-rate schedule: linear warm-up, then cosine decay to a floor (zero by default)."""

from __future__ import annotations

import math

import torch


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, floor: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Factor (s+1)/warmup during warm-up, then floor + (1 − floor)·½(1 + cos(π·progress));
    stepped once per batch."""
    if total_steps < 1 or warmup_steps < 0 or not 0.0 <= floor <= 1.0:
        raise ValueError(
            f"need total_steps >= 1, warmup_steps >= 0 and 0 <= floor <= 1, got {total_steps}, "
            f"{warmup_steps}, {floor}"
        )
    warmup_steps = min(warmup_steps, total_steps - 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
