"""Smooth random UV maps with the generator's left/right symmetry, for demos and synthetic data."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def symmetrize_width(half: torch.Tensor) -> torch.Tensor:
    """The generator's even symmetry along u: (..., W/2) -> (..., W) as
    [flip(x)[..., W/4:], x, flip(x)[..., :W/4]] (docs/method.md section 3)."""
    flipped = half.flip(-1)
    quarter = half.shape[-1] // 2
    return torch.cat([flipped[..., quarter:], half, flipped[..., :quarter]], dim=-1)


def smooth_symmetric_map(batch: int, channels: int, size: int, cells: int = 4, amplitude: float = 1.0,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, C, size, size) map: Gaussian noise on a coarse (cells x cells/2) grid, bicubically
    upsampled to half width and symmetrised, so that it wraps smoothly and is mirror-symmetric."""
    coarse = torch.randn(batch, channels, cells, max(cells // 2, 1), generator=generator) * amplitude
    half = F.interpolate(coarse, size=(size, size // 2), mode="bicubic", align_corners=True)
    half[:, :, 0] = half[:, :, 0].mean(-1, keepdim=True)  # poles: one value per row, as the generator
    half[:, :, -1] = half[:, :, -1].mean(-1, keepdim=True)
    return symmetrize_width(half)


def checker_texture(size: int, squares: int = 8, batch: int = 1) -> torch.Tensor:
    """(B, 3, size, size) texture in [-1, 1]: a checkerboard tinted by a u/v colour gradient, handy
    to see UV orientation and seams in renders."""
    v, u = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    checks = ((u * squares).floor() + (v * squares).floor()) % 2
    rgb = torch.stack([0.3 + 0.7 * u, 0.3 + 0.7 * (1 - v), 0.2 + 0.6 * checks], 0) * (0.6 + 0.4 * checks)
    return (rgb * 2 - 1).clamp(-1, 1).unsqueeze(0).expand(batch, -1, -1, -1).contiguous()
