"""Texels and the surface: where each texel of a UV map lies on the mesh, which texels a camera
sees, and a texture read at the texel centres of another resolution.

    texel_uv(size, symmetric)                      (T, T, 2) UV of every texel centre
    texel_surface(template, size)                  TexelSurface: each covered texel's face and barycentrics
    seen_texels(masks, cameras, vertices, template, surface, ...)   which texels each camera sees
    resample_texture(template, texture, size)      a texture as the renderer reads it, at another size's texels

Texel (i, j) of a T x T texture lies where the renderer samples it (the template's padded texture,
align_corners: meshinv.geometry.template.MeshTemplate.texture_coordinates): row i at
v = 1 - i / (T - 1), column j at u = (j + 0.5) / T for a symmetric template, u = j / T otherwise.
The pseudo-GT textures (meshinv.datagen.pseudogt) and the evaluation's UV errors
(meshinv.evaluation.metrics: uv_error_seen, uv_error_unseen) use these; docs/method.md sections 4 and 8.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ..geometry.camera import WeakPerspectiveCamera
from ..geometry.template import MeshTemplate
from .rasterizer import rasterize
from .shading import covered_pixels, sample_texture


def texel_uv(size: int, symmetric: bool, dtype: torch.dtype = torch.float32,
             device: torch.device | str = "cpu") -> torch.Tensor:
    """(size, size, 2) the (u, v) of every texel centre of a size x size texture (the module doc)."""
    index = torch.arange(size, dtype=torch.float64)
    u = (index + 0.5) / size if symmetric else index / size
    v = 1 - index / (size - 1)
    return torch.stack(torch.meshgrid(u, v, indexing="xy"), dim=-1).to(dtype=dtype, device=device)


@dataclass(frozen=True)
class TexelSurface:
    """Where each covered texel of a T x T texture lies on the template's surface.

    texel (N,) flat index i * T + j; face (N,) the face whose UV triangle contains the texel centre;
    bary (N, 3) the texel centre's barycentric coordinates in that face. Texels on no UV triangle
    (e.g. the top and bottom rows, which only touch the poles) are not listed.
    """

    size: int
    texel: torch.Tensor
    face: torch.Tensor
    bary: torch.Tensor

    def surface_points(self, vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) vertices -> (B, N, 3) positions of the texels on the surface."""
        corners = vertices[:, faces[self.face]]  # (B, N, 3, 3)
        return (self.bary[None, :, :, None] * corners).sum(2)

    def to(self, device: torch.device | str) -> "TexelSurface":
        return replace(self, texel=self.texel.to(device), face=self.face.to(device), bary=self.bary.to(device))


def texel_surface(template: MeshTemplate, size: int) -> TexelSurface:
    """Rasterise the template's UV layout at the texel centres of a size x size texture (texel_uv),
    on the CPU."""
    uvs = template.uvs.detach().cpu().double()[template.face_uv_index.cpu()]  # (F, 3, 2)
    u, v = uvs[..., 0], uvs[..., 1]
    # NDC positions such that the rasteriser's pixel centre (i, j) is texel (i, j).
    x = 2 * u - 1 if template.symmetric else 2 * u + 1 / size - 1
    y = 1 - (2 * (1 - v) * (size - 1) + 1) / size
    corners = torch.stack([x, y, torch.zeros_like(x)], dim=-1).reshape(1, -1, 3)
    faces = torch.arange(corners.shape[1]).reshape(-1, 3)
    fragments = rasterize(corners, faces, size)
    covered = covered_pixels(corners, faces, fragments.face_index)
    return TexelSurface(size, covered.pixel, covered.face, covered.bary.float())


def _sample_nearest(image: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) at NDC points (B, N, 2) -> (B, N, C), nearest pixel (zero outside)."""
    grid = torch.stack([xy[..., 0], -xy[..., 1]], dim=-1)[:, :, None]  # grid_sample's y points down
    return F.grid_sample(image, grid, mode="nearest", padding_mode="zeros", align_corners=False)[..., 0].transpose(1, 2)


def seen_texels(masks: torch.Tensor, cameras: torch.Tensor, vertices: torch.Tensor, template: MeshTemplate,
                surface: TexelSurface, depth_tolerance: float = 0.02, min_facing: float = 0.2
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Which texels of `surface` each image sees, ConvMesh's pseudo-GT rule (docs/method.md section 4).

    masks (B, 1, S, S) the visible object (occluders and background 0); cameras (B, 7) NDC;
    vertices (B, V, 3) object space; surface on the vertices' device. Returns (seen (B, N) bool,
    points (B, N, 3) the texels' NDC positions).

    A texel is seen when its surface point faces the camera (the z of its face's unit normal in NDC
    exceeds `min_facing`: grazing texels are stretched across few pixels and smear), is within
    `depth_tolerance` (NDC z) of the nearest surface at its pixel, projects inside the image, and
    lands on the mask.
    """
    with torch.no_grad():
        ndc = WeakPerspectiveCamera.from_tensor(cameras).transform(vertices)
        points = surface.surface_points(ndc, template.faces)  # (B, N, 3) NDC
        fragments = rasterize(ndc, template.faces, masks.shape[-2:])
        depth = torch.where(fragments.face_index >= 0, fragments.depth, torch.full_like(fragments.depth, -torch.inf))
        nearest_depth = _sample_nearest(depth[:, None], points[..., :2])[..., 0]
        on_mask = _sample_nearest(masks.to(points.dtype), points[..., :2])[..., 0] > 0.5
        facing = template.face_normals(ndc)[:, surface.face, 2] > min_facing
        inside = (points[..., :2].abs() < 1).all(-1)
        seen = facing & inside & on_mask & (points[..., 2] >= nearest_depth - depth_tolerance)
    return seen, points


def resample_texture(template: MeshTemplate, texture: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, T, T) -> (B, C, size, size): the texture as the renderer reads it (bilinear, through
    the template's padded UV layout, align_corners) at the texel centres of a size x size texture.

    At its own size it returns `texture` itself: reading a texture at its own texel centres is the
    identity, up to float rounding that this keeps out.
    """
    if tuple(texture.shape[-2:]) == (size, size):
        return texture
    if size < 2:
        raise ValueError(f"resample_texture: a texture needs at least 2 x 2 texels, got {size}")
    uv = texel_uv(size, template.symmetric, texture.dtype, texture.device)
    uv, padded = template.texture_coordinates(uv, texture)
    return sample_texture(padded, uv.permute(2, 0, 1)[None].expand(texture.shape[0], -1, -1, -1), align_corners=True)
