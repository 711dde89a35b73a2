"""A DIB-R-style soft silhouette: differentiable w.r.t. vertices, also from pixels outside the mesh.

Each face f contributes a probability exp(-d(p, f)^2 / sigma) at pixel centre p, d being the
distance from p to the (projected) triangle, 0 inside it; the silhouette is the union
1 - prod_f (1 - exp(-d^2 / sigma)). Faces farther than sqrt(sigma * ln(1/eps)) contribute less
than eps and are skipped, which bounds each face's footprint as in the hard rasteriser.
"""

from __future__ import annotations

import math

import torch

from .rasterizer import DEFAULT_CHUNK_SIZE, as_image_size, face_pixel_candidates, pixel_boxes

# A face that covers a pixel makes it fully opaque; clamping keeps log(1 - p) finite there.
_MAX_FACE_PROBABILITY = 1.0 - 1e-6


def _squared_distance_to_triangles(p: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    """Squared distance from points p (N, 2) to triangles tri (N, 3, 2), 0 inside."""
    a, b = tri, tri.roll(-1, dims=1)  # the three edges a_k -> b_k
    edge = b - a
    rel = p[:, None, :] - a
    t = ((rel * edge).sum(-1) / (edge * edge).sum(-1).clamp(min=1e-20)).clamp(0, 1)
    nearest = rel - t[..., None] * edge
    edge_d2 = (nearest * nearest).sum(-1).min(dim=1).values
    cross = edge[..., 0] * rel[..., 1] - edge[..., 1] * rel[..., 0]  # which side of each edge
    # All three cross products vanish only for a zero-area triangle (at any p, if it is collapsed to
    # a point): that is no interior, and the edge distance alone is right.
    inside = ((cross >= 0).all(1) | (cross <= 0).all(1)) & (cross != 0).any(1)
    return torch.where(inside, torch.zeros_like(edge_d2), edge_d2)


def soft_silhouette(vertices: torch.Tensor, faces: torch.Tensor, image_size: int | tuple[int, int],
                    sigma: float = 2e-4, eps: float = 1e-4, chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """(B, 1, H, W) soft silhouette of NDC vertices (B, V, 3); sigma in squared NDC units.

    With sigma = 2e-4 a face's influence fades over about 1.5 pixels at 256 x 256 (the NDC pixel
    size is 2/256). Chunking bounds the forward temporaries only: with gradients on, autograd keeps
    each chunk's (face, pixel) terms for the backward pass, O(faces x footprint) in all.
    """
    height, width = as_image_size(image_size)
    batch, n_faces = vertices.shape[0], faces.shape[0]
    face_xy = vertices[:, faces][..., :2]  # (B, F, 3, 2), differentiable
    reach = math.sqrt(sigma * math.log(1.0 / eps))
    with torch.no_grad():
        row0, col0, rows, cols = pixel_boxes(face_xy.detach(), height, width, margin=reach)
    flat_faces = face_xy.reshape(batch * n_faces, 3, 2)
    log_transparency = vertices.new_zeros(batch * height * width)
    for face, row, col in face_pixel_candidates(row0.flatten(), col0.flatten(), rows.flatten(), cols.flatten(), chunk_size):
        p = torch.stack([(2 * col + 1).to(vertices.dtype) / width - 1,
                         1 - (2 * row + 1).to(vertices.dtype) / height], dim=-1)
        d2 = _squared_distance_to_triangles(p, flat_faces[face])
        probability = torch.exp(-d2 / sigma).clamp(max=_MAX_FACE_PROBABILITY)
        pixel = (face // n_faces) * (height * width) + row * width + col
        log_transparency = log_transparency.index_add(0, pixel, torch.log1p(-probability))
    return (1 - torch.exp(log_transparency)).reshape(batch, 1, height, width)
