"""Rendering a mesh from several viewpoints (turntables, novel views)."""

from __future__ import annotations

import torch

from ..geometry.camera import WeakPerspectiveCamera, turntable_quaternions
from ..geometry.template import MeshTemplate
from .settings import Renderer


def render_turntable(template: MeshTemplate, renderer: Renderer, vertices: torch.Tensor, texture: torch.Tensor,
                     azimuths_deg, scale: float = 0.7, background: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Render one mesh, vertices (V, 3) and texture (C, T, T) in [-1, 1], from each azimuth around
    the canonical pose, centred and untranslated (the evaluation's novel-view protocol).

    Returns images (N, C, H, W) in [-1, 1] with `background` (in [-1, 1]) where uncovered, and
    masks (N, 1, H, W).
    """
    quaternions = turntable_quaternions(azimuths_deg, dtype=vertices.dtype, device=vertices.device)
    n = quaternions.shape[0]
    camera = WeakPerspectiveCamera(
        scale=vertices.new_full((n, 1), scale), translation=vertices.new_zeros(n, 2), quaternion=quaternions,
    )
    ndc = camera.transform(vertices.unsqueeze(0).expand(n, -1, -1), center=True, translate=False)
    out = template.render(renderer, ndc, texture.unsqueeze(0).expand(n, -1, -1, -1), background=background)
    return out.image, out.mask
