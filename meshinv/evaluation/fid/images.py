"""The images FID compares, as the original makes them: masked composites in [0, 1], and the novel
views (meshinv.render.views, the one owner of the turntable protocol) on a white background.

    FID12_AZIMUTHS, FID10_AZIMUTHS   the views of FID_12 and FID_10
    composite(image, mask, background)
    novel_view_images(template, vertices, texture, azimuths, size, scale)
"""

from __future__ import annotations

from typing import Sequence

import torch

from ...render.settings import make_renderer
from ...render.views import NOVEL_VIEW_SCALE, render_turntable

FID12_AZIMUTHS = tuple(30.0 * k for k in range(12))
FID10_AZIMUTHS = tuple(a for a in FID12_AZIMUTHS if a not in (90.0, 270.0))


def composite(image: torch.Tensor, mask: torch.Tensor, background: float) -> torch.Tensor:
    """image (..., 3, H, W) in [-1, 1] and mask (..., 1 or none, H, W) -> [0, 1], `background` off the mask."""
    mask = mask.to(image.dtype)
    if mask.dim() == image.dim() - 1:
        mask = mask.unsqueeze(-3)
    return ((image.clamp(-1, 1) + 1) / 2) * mask + background * (1 - mask)


def novel_view_images(template, vertices: torch.Tensor, texture: torch.Tensor, azimuths: Sequence[float],
                      size: int, scale: float = NOVEL_VIEW_SCALE) -> torch.Tensor:
    """(K, 3, size, size) in [0, 1]: render_turntable's views of one mesh (vertices (V, 3), texture
    (3, T, T) in [-1, 1]) on a white background."""
    images, _ = render_turntable(template, make_renderer(size), vertices, texture.to(vertices.dtype), list(azimuths),
                                 scale=scale, background=1.0)
    return (images.clamp(-1, 1) + 1) / 2
