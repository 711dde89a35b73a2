"""The differentiable half of rendering: barycentrics, attribute interpolation, texture sampling.

Given which face covers each pixel (meshinv.render.rasterizer), the barycentric coordinates of the
pixel centre are recomputed here in plain torch from that face's vertex positions, so gradients
flow to the vertices; attributes are interpolated with them and textures sampled bilinearly, so
gradients also flow to textures. Everything works on the list of covered pixels only (P of them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

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
        out = out.index_put((self.pixel,), values)
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
    planes, _ = barycentric_planes(vertices[:, faces][..., :2])  # (B, F, 3, 3)
    planes = planes[image, face]  # (P, 3, 3)
    px = ((2 * col + 1).to(vertices.dtype) / width - 1)[:, None]
    py = (1 - (2 * row + 1).to(vertices.dtype) / height)[:, None]
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
        values = attributes[covered.face]
    else:
        values = attributes[covered.batch, covered.face]
    return (covered.bary.unsqueeze(-1) * values).sum(1)


def sample_texture(texture: torch.Tensor, uv: torch.Tensor, batch: torch.Tensor, align_corners: bool = True) -> torch.Tensor:
    """Bilinear texture lookup at (P, 2) UVs, each in the texture of image `batch[p]`. -> (P, C).

    texture: (B, C, Ht, Wt); uv in [0, 1] with v = 0 at the bottom row (row Ht - 1) and v = 1 at
    the top row, as OBJ files and the original's fragment shader (grid_sample at (2u-1, 1-2v)).
    align_corners has grid_sample's meaning (the original used True). Coordinates outside the
    texture are clamped to its border.
    """
    height, width = texture.shape[-2:]
    u, v = uv[:, 0], 1 - uv[:, 1]
    if align_corners:
        x, y = u * (width - 1), v * (height - 1)
    else:
        x, y = u * width - 0.5, v * height - 0.5
    x = x.clamp(0, width - 1)
    y = y.clamp(0, height - 1)
    x0 = x.detach().floor().clamp(max=width - 2 if width > 1 else 0).long()
    y0 = y.detach().floor().clamp(max=height - 2 if height > 1 else 0).long()
    x1 = (x0 + 1).clamp(max=width - 1)
    y1 = (y0 + 1).clamp(max=height - 1)
    fx = (x - x0.to(x.dtype)).unsqueeze(1)
    fy = (y - y0.to(y.dtype)).unsqueeze(1)
    flat = texture.reshape(texture.shape[0], texture.shape[1], height * width)

    def texel(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        return flat[batch, :, yy * width + xx]  # (P, C)

    top = texel(y0, x0) * (1 - fx) + texel(y0, x1) * fx
    bottom = texel(y1, x0) * (1 - fx) + texel(y1, x1) * fx
    return top * (1 - fy) + bottom * fy
