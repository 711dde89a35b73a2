"""Visibility: which face is nearest at each pixel centre. Not differentiable, by nature.

Input vertices are in normalised device coordinates (NDC): x to the right, y upwards, each spanning
[-1, 1] across the image, larger z nearer the viewer. Pixel (i, j) of an H x W image has its centre
at x = (2j + 1)/W - 1, y = 1 - (2i + 1)/H (meshinv.geometry.camera.pixel_centers).

Work is bounded by each face's pixel footprint: every face enumerates only the pixel centres inside
its clipped bounding box, so the cost grows with the covered area, not with pixels x faces. The
(face, pixel) candidates are processed in chunks of at most `chunk_size`, so a face that covers the
whole image is still handled in bounded memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch

DEFAULT_CHUNK_SIZE = 1 << 21  # (face, pixel) candidates per chunk: ~100 MB of temporaries


@dataclass(frozen=True)
class Fragments:
    """Result of rasterisation (no gradients).

    face_index  (B, H, W) long: index into `faces` of the nearest face covering the pixel centre,
                -1 where no face covers it.
    depth       (B, H, W): NDC z of that face at the pixel centre (larger = nearer), 0 on background.
    """

    face_index: torch.Tensor
    depth: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """(B, 1, H, W) 1 where a face covers the pixel centre, else 0."""
        return (self.face_index >= 0).unsqueeze(1).to(self.depth.dtype)


def as_image_size(image_size: int | tuple[int, int]) -> tuple[int, int]:
    """An int or (H, W) -> (H, W)."""
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return int(height), int(width)


def pixel_boxes(face_xy: torch.Tensor, height: int, width: int, margin: float = 0.0):
    """Clipped ranges of pixel rows/columns whose centres lie in each face's bounding box.

    face_xy: (..., 3, 2) NDC positions of the face corners; `margin` (NDC units) grows the box.
    Returns (row0, col0, rows, cols) long tensors of shape (...); rows/cols are 0 for faces that
    are off-screen.
    """
    x, y = face_xy[..., 0], face_xy[..., 1]
    xmin, xmax = x.min(-1).values - margin, x.max(-1).values + margin
    ymin, ymax = y.min(-1).values - margin, y.max(-1).values + margin
    # Centre of column j: x = (2j+1)/W - 1  <=>  j = (x + 1) W / 2 - 1/2 (rows likewise, y flipped).
    col0 = torch.ceil((xmin + 1) * width / 2 - 0.5).clamp(min=0)
    col1 = torch.floor((xmax + 1) * width / 2 - 0.5).clamp(max=width - 1)
    row0 = torch.ceil((1 - ymax) * height / 2 - 0.5).clamp(min=0)
    row1 = torch.floor((1 - ymin) * height / 2 - 0.5).clamp(max=height - 1)
    rows = (row1 - row0 + 1).clamp(min=0)
    cols = (col1 - col0 + 1).clamp(min=0)
    finite = torch.isfinite(face_xy).all(-1).all(-1)
    rows = torch.where(finite, rows, torch.zeros_like(rows))
    cols = torch.where(finite, cols, torch.zeros_like(cols))
    zero = torch.zeros_like(row0)
    row0 = torch.where(finite, row0, zero)
    col0 = torch.where(finite, col0, zero)
    return row0.long(), col0.long(), rows.long(), cols.long()


def enumerate_ranges(counts: torch.Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Enumerate (owner, k) for k = 0..counts[owner]-1 over all owners, in chunks.

    counts: (N,) long. Yields (owner (n,), k (n,)) with n <= chunk_size, owners ascending, so that
    a single owner with a huge count is split across chunks and memory stays bounded.
    """
    owners = torch.nonzero(counts > 0).squeeze(1)
    if owners.numel() == 0:
        return
    counts = counts[owners]
    ends = torch.cumsum(counts, 0)
    total = int(ends[-1])
    if total <= chunk_size:  # the common case: one pass, no search
        owner = torch.repeat_interleave(torch.arange(len(owners), device=counts.device), counts, output_size=total)
        yield owners[owner], torch.arange(total, device=counts.device) - (ends - counts)[owner]
        return
    for start in range(0, total, chunk_size):
        item = torch.arange(start, min(start + chunk_size, total), device=counts.device)
        owner = torch.searchsorted(ends, item, right=True)
        yield owners[owner], item - (ends - counts)[owner]


def face_pixel_candidates(row0, col0, rows, cols, chunk_size: int = DEFAULT_CHUNK_SIZE
                          ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Enumerate (face, row, col) for every pixel in every face's box, in chunks.

    Inputs are flat (N,) tensors from pixel_boxes (N = batch x faces). Yields (face (n,), row (n,),
    col (n,)) long tensors with n <= chunk_size; `face` indexes the flat input.
    """
    for face, k in enumerate_ranges(rows * cols, chunk_size):
        width = cols[face]
        yield face, row0[face] + k // width, col0[face] + k % width


def barycentric_planes(face_xy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear functions giving each face's barycentric coordinates, relative to its first corner.

    face_xy: (..., 3, 2). Returns planes (..., 3, 3) [k, (a, b, c)] such that
    w_k(x, y) = a_k (x - x_0) + b_k (y - y_0) + c_k, with (x_0, y_0) = face_xy[..., 0, :], and the
    doubled signed area (...,) (positive for counter-clockwise faces in NDC). Working relative to a
    corner avoids the cancellation of x_1 y_2 - x_2 y_1 for small faces far from the origin.
    """
    rel = face_xy - face_xy[..., :1, :]
    x, y = rel[..., 0], rel[..., 1]
    x1, x2 = x.roll(-1, -1), x.roll(-2, -1)  # the two other corners of each corner k
    y1, y2 = y.roll(-1, -1), y.roll(-2, -1)
    area2 = x[..., 1] * y[..., 2] - x[..., 2] * y[..., 1]
    a, b, c = y1 - y2, x2 - x1, x1 * y2 - x2 * y1
    safe = torch.where(area2.abs() > 0, area2, torch.ones_like(area2))[..., None]
    return torch.stack([a / safe, b / safe, c / safe], dim=-1), area2


def _row_spans(planes: torch.Tensor, y: torch.Tensor, origin_x: torch.Tensor, width: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last column whose pixel centre lies inside each face on a pixel row.

    planes (N, 3, 3) barycentric planes (normalised by the signed area, so inside = all w_k >= 0),
    y (N,) the row's NDC y relative to the face's first corner, origin_x (N,) that corner's x.
    Each w_k >= 0 bounds x - x_0 from one side: a_k (x - x_0) >= -(b_k (y - y_0) + c_k).
    """
    a = planes[..., 0]
    rest = planes[..., 1] * y[:, None] + planes[..., 2]
    bound = -rest / torch.where(a == 0, torch.ones_like(a), a)
    inf = torch.full_like(bound, math.inf)
    x_lo = origin_x + torch.where(a > 0, bound, -inf).max(-1).values
    x_hi = origin_x + torch.where(a < 0, bound, inf).min(-1).values
    # A horizontal edge (a_k = 0) admits the whole row or none of it.
    outside = ((a == 0) & (rest < 0)).any(-1)
    col_lo = torch.ceil((x_lo + 1) * width / 2 - 0.5).clamp(min=0)
    col_hi = torch.floor((x_hi + 1) * width / 2 - 0.5).clamp(max=width - 1)
    col_hi = torch.where(outside, col_lo - 1, col_hi)
    return col_lo.long(), col_hi.long()


@torch.no_grad()
def rasterize(vertices: torch.Tensor, faces: torch.Tensor, image_size: int | tuple[int, int],
              cull_backfaces: bool = False, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Fragments:
    """Nearest face per pixel centre (a z-buffer).

    vertices: (B, V, 3) NDC; faces: (F, 3) long. A pixel centre on a face's edge counts as inside.
    Faces with zero area or non-finite vertices are skipped; with `cull_backfaces`, so are faces
    that are clockwise in NDC (facing away for outward-oriented meshes). Exactly equal depths are
    resolved towards the larger face index.

    Each face visits the pixel rows of its bounding box and, per row, only the span of columns
    whose centres are inside it, so the work is proportional to the covered pixels.
    """
    height, width = as_image_size(image_size)
    batch, n_faces = vertices.shape[0], faces.shape[0]
    face_xyz = vertices.detach()[:, faces].reshape(batch * n_faces, 3, 3)
    planes, area2 = barycentric_planes(face_xyz[..., :2])
    valid = area2 > 0 if cull_backfaces else area2 != 0
    origin = face_xyz[:, 0, :2]  # planes are relative to each face's first corner
    # Depth is linear in (x, y) over a face: z = sum_k w_k z_k = dx (x - x_0) + dy (y - y_0) + d0.
    depth_plane = (planes * face_xyz[..., 2:3]).sum(-2)  # (N, 3)
    row0, _, rows, _ = pixel_boxes(face_xyz[..., :2], height, width)
    rows = rows * valid

    best_depth = torch.full((batch * height * width,), -math.inf, dtype=vertices.dtype, device=vertices.device)
    best_face = torch.full((batch * height * width,), -1, dtype=torch.long, device=vertices.device)
    # Spans: one per (face, row) of the face's box. Their count is small (about faces x rows).
    for span_face, k in enumerate_ranges(rows, chunk_size):
        span_row = row0[span_face] + k
        span_y = 1 - (2 * span_row + 1).to(vertices.dtype) / height
        span_origin = origin[span_face]
        span_dy = span_y - span_origin[:, 1]
        col_lo, col_hi = _row_spans(planes[span_face], span_dy, span_origin[:, 0], width)
        span_len = (col_hi - col_lo + 1).clamp(min=0)
        plane = depth_plane[span_face]
        # Depth at the span's first pixel centre and its step per column.
        x_lo = (2 * col_lo + 1).to(vertices.dtype) / width - 1
        span_depth = plane[:, 0] * (x_lo - span_origin[:, 0]) + plane[:, 1] * span_dy + plane[:, 2]
        span_step = plane[:, 0] * (2.0 / width)
        span_pixel = (span_face // n_faces) * (height * width) + span_row * width + col_lo
        for span, offset in enumerate_ranges(span_len, chunk_size):
            pixel = span_pixel[span] + offset
            depth = span_depth[span] + span_step[span] * offset.to(vertices.dtype)
            face = span_face[span] % n_faces
            best_depth.scatter_reduce_(0, pixel, depth, reduce="amax")
            won = depth >= best_depth[pixel]
            pixel, face = pixel[won], face[won]
            best_face[pixel] = -1  # the winner is in this chunk: forget an earlier chunk's face
            best_face.scatter_reduce_(0, pixel, face, reduce="amax")
    covered = best_face >= 0
    depth = torch.where(covered, best_depth, torch.zeros_like(best_depth))
    return Fragments(best_face.reshape(batch, height, width), depth.reshape(batch, height, width))
