"""The differentiable half of rendering: barycentrics, attribute interpolation, texture sampling.

Given which face covers each pixel (meshinv.render.rasterizer), the barycentric coordinates of the
pixel centre are recomputed here in plain torch from that face's vertex positions, so gradients
flow to the vertices; attributes are interpolated with them and textures sampled bilinearly, so
gradients also flow to textures. Everything works on the list of covered pixels only (P of them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .rasterizer import barycentric_planes


@dataclass(frozen=True)
class CoveredPixels:
    """The covered pixels of a batch of images, flattened.

    pixel  (P,) long: flat index b * H * W + i * W + j
    batch  (P,) long: image index b
    face   (P,) long: the face that covers the pixel
    bary   (P, 3): barycentric coordinates of the pixel centre in that face (differentiable)
    shape  (B, H, W)
    """

    pixel: torch.Tensor
    batch: torch.Tensor
    face: torch.Tensor
    bary: torch.Tensor
    shape: tuple[int, int, int]

    def to_image(self, values: torch.Tensor, background: float | torch.Tensor = 0.0) -> torch.Tensor:
        """Scatter (P, C) per-pixel values into a (B, C, H, W) image (differentiable)."""
        batch, height, width = self.shape
        channels = values.shape[1]
        if isinstance(background, torch.Tensor):
            out = background.to(values.dtype).expand(batch, channels, height, width)
            out = out.permute(0, 2, 3, 1).reshape(-1, channels).clone()
        else:
            out = values.new_full((batch * height * width, channels), float(background))
        out = out.index_copy(0, self.pixel, values)
        return out.reshape(batch, height, width, channels).permute(0, 3, 1, 2)


def covered_pixels(vertices: torch.Tensor, faces: torch.Tensor, face_index: torch.Tensor) -> CoveredPixels:
    """Barycentric coordinates of every covered pixel centre, differentiable w.r.t. `vertices`.

    vertices (B, V, 3) NDC, faces (F, 3), face_index (B, H, W) from rasterize().
    """
    batch, height, width = face_index.shape
    flat = face_index.reshape(-1)
    pixel = torch.nonzero(flat >= 0).squeeze(1)
    face = flat[pixel]
    image = pixel // (height * width)
    within = pixel % (height * width)
    row, col = within // width, within % width
    # Planes per face (cheap: B x F), differentiable, then gathered for each covered pixel.
    # index_select on flat views: its backward (index_add) is much cheaper than advanced indexing's.
    face_xy = vertices[:, faces][..., :2]  # (B, F, 3, 2)
    planes, _ = barycentric_planes(face_xy)  # relative to each face's first corner
    flat_face = image * faces.shape[0] + face
    planes = planes.reshape(-1, 9).index_select(0, flat_face).reshape(-1, 3, 3)  # (P, 3, 3)
    origin = face_xy[:, :, 0].reshape(-1, 2).index_select(0, flat_face)  # (P, 2)
    px = ((2 * col + 1).to(vertices.dtype) / width - 1 - origin[:, 0])[:, None]
    py = (1 - (2 * row + 1).to(vertices.dtype) / height - origin[:, 1])[:, None]
    bary = planes[..., 0] * px + planes[..., 1] * py + planes[..., 2]
    return CoveredPixels(pixel, image, face, bary, (batch, height, width))


def interpolate_vertex_attributes(covered: CoveredPixels, faces: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """Interpolate per-vertex attributes (B, V, C) or (V, C) at the covered pixels -> (P, C)."""
    corners = faces[covered.face]  # (P, 3)
    if attributes.dim() == 2:
        values = attributes[corners]
    else:
        values = attributes[covered.batch[:, None], corners]
    return (covered.bary.unsqueeze(-1) * values).sum(1)


def interpolate_corner_attributes(covered: CoveredPixels, attributes: torch.Tensor) -> torch.Tensor:
    """Interpolate per-face-corner attributes (F, 3, C) or (B, F, 3, C) -> (P, C)."""
    if attributes.dim() == 3:
        values = attributes.index_select(0, covered.face)
    else:
        flat = covered.batch * attributes.shape[1] + covered.face
        values = attributes.reshape(-1, *attributes.shape[2:]).index_select(0, flat)
    return (covered.bary.unsqueeze(-1) * values).sum(1)


def sample_texture(texture: torch.Tensor, uv: torch.Tensor, align_corners: bool = True) -> torch.Tensor:
    """Bilinear texture lookup at a (B, 2, H, W) image of UVs -> (B, C, H, W).

    texture: (B, C, Ht, Wt); uv in [0, 1] with v = 0 at the bottom row (row Ht - 1) and v = 1 at
    the top row, as OBJ files and the original's fragment shader (grid_sample at (2u - 1, 1 - 2v)).
    align_corners has grid_sample's meaning (the original used True). Coordinates outside the
    texture are clamped to its border. Sampling the whole UV image (not only covered pixels) costs
    O(H W) but uses grid_sample's fused kernels, which is faster than gathering per pixel,
    especially backwards; callers mask the uncovered pixels.
    """
    grid = torch.stack([2 * uv[:, 0] - 1, 1 - 2 * uv[:, 1]], dim=-1)  # (B, H, W, 2)
    return F.grid_sample(texture, grid, mode="bilinear", padding_mode="border", align_corners=align_corners)
