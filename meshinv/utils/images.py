"""Conversions between our image tensors ([-1, 1], (C, H, W)) and files."""

from __future__ import annotations

import os

import numpy as np
import torch

from .io import save_image


def to_numpy_image(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H, W, C) float array in [0, 1] (C = 1 gives (H, W))."""
    array = ((image.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[-1] == 1 else array


def save_grid(path: str | os.PathLike, images: torch.Tensor, nrow: int = 8, padding: int = 2) -> None:
    """Save (N, C, H, W) images in [-1, 1] as one PNG grid (atomically)."""
    from torchvision.utils import make_grid

    grid = make_grid(images.detach().float().cpu(), nrow=nrow, padding=padding, pad_value=1.0)
    save_image(path, to_numpy_image(grid))
