"""Voxelisation of triangle meshes and the 3D IoU of PASCAL3D+ (iou_3d).

    winding_numbers(points, vertices, faces)   generalised winding number of each point
    voxelize_mesh(vertices, faces, resolution, bounds) -> (R, R, R) bool occupancy of voxel centres
    voxel_iou(a, b)                            IoU of two occupancy grids
    align_to_cad(pred, cad, rotation)          the prediction in the CAD model's normalised frame
    cad_iou_3d(...)                            both steps and the IoU

Inside test: a voxel is occupied when the generalised winding number of the mesh at its centre is
above 1/2 in magnitude (Jacobson et al. 2013). For a closed, consistently oriented mesh that is the
exact inside test (1 inside, 0 outside); it stays meaningful for the PASCAL3D+ CAD models, which are
not all watertight, and it ignores the orientation of the faces.

The 3D IoU protocol follows the one used for PASCAL3D+ since CMR (the DRC-era MATLAB evaluation):
both shapes in the CAD model's object frame, a 32^3 grid over the unit cube, an isotropic scale and
translation of the prediction estimated from bounding boxes (centres matched, scale = cube root of
the ratio of box volumes), IoU of the occupancies. Differences, documented:
- that evaluation averages the box-based translation and scale over the whole test set; we estimate
  them per image, which makes iou_3d a per-image metric (and slightly more forgiving);
- the CAD model is normalised (box centre at 0, longest side 1) so that it fills the unit cube;
  prediction parts outside the cube are dropped, as there;
- our object frame is not the CAD frame: a fixed rotation (evaluation.cad_rotation_euler_xyz_deg)
  maps one to the other. The default, Euler xyz (-90, 0, 0), takes our -y (image-up at the identity
  camera) to the CAD's z (up) and our z to its y (length), our x (the symmetry axis) staying x. It
  follows the conventions but has not been checked against real PASCAL3D+ reconstructions.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ..geometry.camera import euler_to_matrix


def winding_numbers(points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor,
                    chunk_size: int = 1 << 20) -> torch.Tensor:
    """(P,) generalised winding numbers of points (P, 3) w.r.t. the mesh (vertices (V, 3), faces (F, 3)):
    the sum of the signed solid angles of the triangles seen from each point, over 4 pi
    (van Oosterom & Strackee's formula), in float64. chunk_size bounds points x faces per step."""
    corners = vertices.double()[faces.long()]                      # (F, 3, 3)
    points = points.double()
    rows = max(1, chunk_size // max(1, faces.shape[0]))
    out = []
    for start in range(0, points.shape[0], rows):
        rel = corners[None] - points[start:start + rows, None, None, :]   # (p, F, 3, 3)
        a, b, c = rel.unbind(dim=2)
        la, lb, lc = a.norm(dim=-1), b.norm(dim=-1), c.norm(dim=-1)
        det = (a * torch.cross(b, c, dim=-1)).sum(-1)
        denom = la * lb * lc + (a * b).sum(-1) * lc + (b * c).sum(-1) * la + (c * a).sum(-1) * lb
        out.append(torch.atan2(det, denom).sum(dim=1) / (2 * math.pi))   # solid angle = 2 atan2(...)
    return torch.cat(out) if out else points.new_zeros(0)


def voxel_centers(resolution: int, bounds: tuple[float, float] = (-0.5, 0.5), device=None) -> torch.Tensor:
    """(R^3, 3) centres of a resolution^3 grid over the cube [lo, hi]^3, index order (i, j, k) = (x, y, z)."""
    lo, hi = bounds
    axis = lo + (torch.arange(resolution, dtype=torch.float64, device=device) + 0.5) * (hi - lo) / resolution
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)


def voxelize_mesh(vertices: torch.Tensor, faces: torch.Tensor, resolution: int = 32,
                  bounds: tuple[float, float] = (-0.5, 0.5)) -> torch.Tensor:
    """(R, R, R) bool: voxels of the grid over [lo, hi]^3 whose centre is inside the mesh."""
    if vertices.dim() != 2 or vertices.shape[1] != 3 or faces.dim() != 2 or faces.shape[1] != 3:
        raise ValueError(f"expected vertices (V, 3) and faces (F, 3), got {tuple(vertices.shape)}, {tuple(faces.shape)}")
    if resolution < 1:
        raise ValueError(f"voxel resolution must be positive, got {resolution}")
    centers = voxel_centers(resolution, bounds, vertices.device)
    inside = winding_numbers(centers, vertices, faces.to(vertices.device)).abs() > 0.5
    return inside.reshape(resolution, resolution, resolution)


def voxel_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a and b| / |a or b| of two boolean grids; 1 when both are empty."""
    if a.shape != b.shape:
        raise ValueError(f"voxel grids differ in shape: {tuple(a.shape)} vs. {tuple(b.shape)}")
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def bounding_box(vertices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(centre (3,), size (3,)) of the axis-aligned box of vertices (V, 3)."""
    lo, hi = vertices.min(dim=0).values, vertices.max(dim=0).values
    return (lo + hi) / 2, hi - lo


def normalize_to_unit_cube(vertices: torch.Tensor) -> torch.Tensor:
    """Box centre to the origin, longest box side to 1."""
    center, size = bounding_box(vertices)
    longest = float(size.max())
    if not longest > 0:
        raise ValueError("cannot normalise a mesh whose vertices all coincide")
    return (vertices - center) / longest


def align_by_bounding_box(vertices: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """vertices scaled isotropically and translated so that their box has the target box's centre
    and volume (scale = cube root of the ratio of box volumes)."""
    center, size = bounding_box(vertices)
    target_center, target_size = bounding_box(target)
    volume = float(size.double().prod())
    if not volume > 0:
        raise ValueError("the predicted mesh is flat (its bounding box has no volume)")
    scale = (float(target_size.double().prod()) / volume) ** (1.0 / 3.0)
    return (vertices - center) * scale + target_center


def frame_rotation(euler_xyz_deg: Sequence[float], dtype=torch.float64, device=None) -> torch.Tensor:
    """(3, 3) rotation from our object frame to the CAD frame (Euler xyz degrees, scipy convention)."""
    return euler_to_matrix(torch.tensor([float(a) for a in euler_xyz_deg], dtype=torch.float64), "xyz",
                           degrees=True).to(dtype=dtype, device=device)


def align_to_cad(pred_vertices: torch.Tensor, cad_vertices: torch.Tensor,
                 rotation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction, CAD model) in the CAD model's normalised frame (box centred, longest side 1): the
    prediction rotated into the CAD frame, then matched to the CAD's box (align_by_bounding_box)."""
    cad = normalize_to_unit_cube(cad_vertices.double())
    pred = pred_vertices.double() @ rotation.to(pred_vertices.device, torch.float64).T
    return align_by_bounding_box(pred, cad), cad


def cad_iou_3d(pred_vertices: torch.Tensor, pred_faces: torch.Tensor, cad_vertices: torch.Tensor,
               cad_faces: torch.Tensor, rotation: torch.Tensor, resolution: int = 32,
               cad_voxels: torch.Tensor | None = None) -> float:
    """3D IoU of a predicted mesh and a CAD model (module doc); cad_voxels: the CAD model's grid, if
    already computed (it depends on the model and the resolution only)."""
    pred, cad = align_to_cad(pred_vertices, cad_vertices, rotation)
    if cad_voxels is None:
        cad_voxels = voxelize_mesh(cad, cad_faces, resolution)
    return voxel_iou(voxelize_mesh(pred, pred_faces, resolution), cad_voxels)
