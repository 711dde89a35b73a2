"""Rendering a mesh from several viewpoints: the turntable (novel-view) protocol, one owner.

Every novel view in the code base (the evaluation's novel_view_iou, FID_10 / FID_12 and report
grid, the inversion's turntable.gif, pretraining's sample grids, scripts/render_mesh.py) is one mesh
seen from each azimuth about the canonical pose (meshinv.geometry.turntable_quaternions), centred
at its vertex mean, not translated, at weak-perspective scale NOVEL_VIEW_SCALE unless asked otherwise.

    turntable_ndc(vertices, azimuths, scale)                   (N, V, 3) NDC vertices of the views
    render_turntable(template, renderer, vertices, texture, ...)  textured images and masks
    turntable_silhouettes(template, renderer, vertices, ...)   hard masks only (no shading)
"""

from __future__ import annotations

import torch

from ..geometry.camera import WeakPerspectiveCamera, turntable_quaternions
from ..geometry.template import MeshTemplate
from .settings import Renderer

# The original's novel-view scale (run_evaluation.py: the FID_12 renders).
NOVEL_VIEW_SCALE = 0.7


def turntable_ndc(vertices: torch.Tensor, azimuths_deg, scale: float = NOVEL_VIEW_SCALE) -> torch.Tensor:
    """(N, V, 3) NDC vertices of one mesh (V, 3) seen from each of N azimuths (degrees) about the
    canonical pose, centred at its vertex mean and untranslated."""
    quaternions = turntable_quaternions(azimuths_deg, dtype=vertices.dtype, device=vertices.device)
    n = quaternions.shape[0]
    camera = WeakPerspectiveCamera(
        scale=vertices.new_full((n, 1), scale), translation=vertices.new_zeros(n, 2), quaternion=quaternions,
    )
    return camera.transform(vertices.unsqueeze(0).expand(n, -1, -1), center=True, translate=False)


def render_turntable(template: MeshTemplate, renderer: Renderer, vertices: torch.Tensor, texture: torch.Tensor,
                     azimuths_deg, scale: float = NOVEL_VIEW_SCALE, background: float = 1.0
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Render one mesh, vertices (V, 3) and texture (C, T, T) in [-1, 1], from each azimuth
    (turntable_ndc).

    Returns images (N, C, H, W) in [-1, 1] with `background` (in [-1, 1]) where uncovered, and
    masks (N, 1, H, W).
    """
    ndc = turntable_ndc(vertices, azimuths_deg, scale)
    out = template.render(renderer, ndc, texture.unsqueeze(0).expand(ndc.shape[0], -1, -1, -1), background=background)
    return out.image, out.mask


def turntable_silhouettes(template: MeshTemplate, renderer: Renderer, vertices: torch.Tensor, azimuths_deg,
                          scale: float = NOVEL_VIEW_SCALE) -> torch.Tensor:
    """(N, H, W) bool hard masks of the views render_turntable draws, without shading them."""
    ndc = turntable_ndc(vertices, azimuths_deg, scale)
    return renderer.rasterize(ndc, template.faces.to(vertices.device)).mask[:, 0] > 0.5
