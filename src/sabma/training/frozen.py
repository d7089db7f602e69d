"""The frozen rest of the network: kept at w_pre, or re-sampled around it every step.

With ``frozen="prior"`` each step draws w_F ~ N(w_pre, s² I) for every parameter outside the
Bayesian subset, *independently* of the subset's posterior (no prior used here couples the two).
"""

from __future__ import annotations

import torch
from torch import nn


class FrozenRest:
    """Writes noisy copies of the pre-trained frozen parameters into the model and restores them."""

    def __init__(self, model: nn.Module, subset: list[str], std: float) -> None:
        if std < 0:
            raise ValueError(f"frozen_std must be >= 0, got {std}")
        chosen = set(subset)
        self.params = [p for n, p in model.named_parameters() if n not in chosen]
        self.saved = [p.detach().clone() for p in self.params]
        self.std = std

    @torch.no_grad()
    def resample(self, generator: torch.Generator | None = None) -> None:
        for p, w_pre in zip(self.params, self.saved, strict=True):
            noise = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
            p.copy_(w_pre + self.std * noise)

    @torch.no_grad()
    def restore(self) -> None:
        for p, w_pre in zip(self.params, self.saved, strict=True):
            p.copy_(w_pre)
