"""Images to network inputs: 3 channels, a given resolution, ImageNet normalisation."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.nn.functional import interpolate

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def preprocess_images(images: np.ndarray | Tensor, resolution: int, chunk: int = 4096) -> Tensor:
    """uint8 images (n, H, W) or (n, H, W, C) → float (n, 3, resolution, resolution), normalised
    with the ImageNet mean and std. Grey images are repeated over 3 channels."""
    if resolution < 8:
        raise ValueError(f"resolution must be at least 8 pixels, got {resolution}")
    x = torch.as_tensor(np.asarray(images))
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError("the images hold NaN or infinite values")
    if x.dim() == 3:
        x = x.unsqueeze(-1)
    if x.dim() != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"expected images (n, H, W) or (n, H, W, 1|3), got {tuple(x.shape)}")
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    out = torch.empty(len(x), 3, resolution, resolution)
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk].permute(0, 3, 1, 2).float() / 255.0
        if part.shape[-2:] != (resolution, resolution):
            part = interpolate(
                part,
                size=(resolution, resolution),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        out[start : start + chunk] = (part.expand(-1, 3, -1, -1) - mean) / std
    return out


def augment(batch: Tensor, generator: torch.Generator | None = None, pad: int = 2) -> Tensor:
    """Light augmentation for training: random shifts by up to ``pad`` pixels and horizontal
    flips, per image."""
    n, _, h, w = batch.shape
    padded = torch.nn.functional.pad(batch, (pad, pad, pad, pad), mode="replicate")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.empty_like(batch)
    for i in range(n):
        crop = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out
