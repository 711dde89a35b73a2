"""MeshRenderer: rasterise (visibility, no gradient) then shade (differentiable), in ~20 lines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from .rasterizer import DEFAULT_CHUNK_SIZE, Fragments, as_image_size, rasterize
from .shading import covered_pixels, interpolate_corner_attributes, interpolate_vertex_attributes, sample_texture
from .silhouette import soft_silhouette


@dataclass(frozen=True)
class RenderOutput:
    """What MeshRenderer returns.

    image       (B, C, H, W) texture colour at each covered pixel centre, `background` elsewhere;
                differentiable w.r.t. texture and vertex positions (through the barycentric UVs).
    mask        (B, 1, H, W) 1 where a face covers the pixel centre, else 0 (hard, no gradient).
    face_index  (B, H, W) long, -1 for background.
    depth       (B, H, W) NDC z of the visible surface (larger = nearer), 0 on background;
                differentiable w.r.t. vertex positions.
    """

    image: torch.Tensor
    mask: torch.Tensor
    face_index: torch.Tensor
    depth: torch.Tensor


class MeshRenderer(nn.Module):
    """Differentiable textured-mesh renderer for vertices already in NDC.

    Args:
        image_size: int or (H, W).
        align_corners: texture sampling convention, as grid_sample's flag (the original: True).
        cull_backfaces: skip faces that are clockwise in NDC.
        sigma: softness of soft_silhouette(), in squared NDC units.
        chunk_size: (face, pixel) candidates processed at once; bounds temporary memory.
    """

    def __init__(self, image_size: int | tuple[int, int], align_corners: bool = True, cull_backfaces: bool = False,
                 sigma: float = 2e-4, chunk_size: int = DEFAULT_CHUNK_SIZE):
        super().__init__()
        self.image_size = as_image_size(image_size)
        self.align_corners = align_corners
        self.cull_backfaces = cull_backfaces
        self.sigma = sigma
        self.chunk_size = chunk_size

    def extra_repr(self) -> str:
        return f"image_size={self.image_size}, align_corners={self.align_corners}, cull_backfaces={self.cull_backfaces}"

    def rasterize(self, vertices: torch.Tensor, faces: torch.Tensor) -> Fragments:
        return rasterize(vertices, faces, self.image_size, self.cull_backfaces, self.chunk_size)

    def forward(self, vertices: torch.Tensor, faces: torch.Tensor, face_uvs: torch.Tensor, texture: torch.Tensor,
                background: Optional[torch.Tensor | float] = 0.0) -> RenderOutput:
        """vertices (B, V, 3) NDC, faces (F, 3) long, face_uvs (F, 3, 2) or (B, F, 3, 2) in [0, 1],
        texture (B, C, Ht, Wt); background: a number, or a (B, C, H, W) / (C, 1, 1) tensor."""
        if vertices.dim() != 3 or vertices.shape[-1] != 3:
            raise ValueError(f"vertices must be (B, V, 3), got {tuple(vertices.shape)}")
        if texture.dim() != 4 or texture.shape[0] != vertices.shape[0]:
            raise ValueError(f"texture must be (B, C, Ht, Wt) with B = {vertices.shape[0]}, got {tuple(texture.shape)}")
        if texture.dtype != vertices.dtype:
            raise TypeError(f"texture is {texture.dtype} but vertices are {vertices.dtype}: cast one of them")
        faces, face_uvs = faces.to(vertices.device), face_uvs.to(vertices.device)
        fragments = self.rasterize(vertices, faces)
        covered = covered_pixels(vertices, faces, fragments.face_index)
        uv = covered.to_image(interpolate_corner_attributes(covered, face_uvs.to(vertices.dtype)))
        colors = sample_texture(texture, uv, self.align_corners)
        covered_mask = (fragments.face_index >= 0).unsqueeze(1)
        if not isinstance(background, torch.Tensor):
            background = colors.new_tensor(0.0 if background is None else float(background))
        image = torch.where(covered_mask, colors, background.to(device=colors.device, dtype=colors.dtype))
        depth = covered.to_image(interpolate_vertex_attributes(covered, faces, vertices[..., 2:]))
        return RenderOutput(image, fragments.mask.to(vertices.dtype), fragments.face_index, depth[:, 0])

    def soft_silhouette(self, vertices: torch.Tensor, faces: torch.Tensor, sigma: Optional[float] = None) -> torch.Tensor:
        """(B, 1, H, W) DIB-R-style soft silhouette, differentiable w.r.t. vertices everywhere."""
        return soft_silhouette(vertices, faces.to(vertices.device), self.image_size,
                               sigma=self.sigma if sigma is None else sigma, chunk_size=self.chunk_size)
