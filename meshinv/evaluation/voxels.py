"""Voxelisation of triangle meshes and the 3D IoU of PASCAL3D+ (iou_3d, iou_3d_global).

    winding_numbers(points, vertices, faces)   generalised winding number of each point (any mesh)
    ray_winding_grid(vertices, faces, R)       winding numbers on the grid by ray crossings (closed meshes)
    voxelize_mesh(vertices, faces, resolution, bounds, method) -> (R, R, R) bool occupancy of voxel centres
    voxel_iou(a, b)                            IoU of two occupancy grids
    box_alignment(pred, cad)                   (translation, scale) matching the prediction's box to the CAD's
    align_to_cad(pred, cad, alignment)         prediction and CAD model in the voxel grid's frame
    cad_iou_3d(...)                            both steps and the IoU

Inside test: a voxel is occupied when the winding number of the mesh at its centre is above 1/2 in
magnitude, which ignores the orientation of the faces. For a closed mesh (our predictions: deformed
spheres) it is counted exactly and fast by signed ray crossings; for the PASCAL3D+ CAD models, not
all watertight, the generalised winding number (Jacobson et al. 2013) keeps it meaningful.

Frames. The prediction and the CAD model are compared with no rotation between them, in the object
frame that the dataset's SfM cameras act on. The inversion's meshes live in it, since their cameras
start from those cameras (or from predictions trained on them), and its axes are those of the
PASCAL3D+ CAD models: CMR aligns its SfM model to x the mirror axis, y along the length and z up
(preprocess/sfm/alignSfmModel.m), and its evaluation (eval_mean_iou.m) gives prediction and CAD
model one and the same axis permutation. Scale and origin may differ; the box alignment below
removes them. meshinv/data/p3d.py keeps cameras and CAD models as stored.

The protocol follows CMR's eval_mean_iou.m (the DRC-era MATLAB evaluation used for PASCAL3D+
since): a 32^3 grid over the unit cube, the prediction translated and scaled isotropically to the
CAD model's box (centres matched, scale = cube root of the ratio of box volumes), IoU of the
occupancies. Differences, documented:
- iou_3d estimates that translation and scale per image, which makes it a per-image metric (and
  more forgiving), and normalises each CAD model (box centre at 0, longest side 1) so that it
  fills the grid;
- iou_3d_global is CMR's protocol: CAD models as stored (CMR voxelises them over the unit cube as
  they are; one reaching outside it is warned about), each image's translation and scale to its CAD
  model (box_alignment) averaged over all evaluated images, and the means applied to every
  prediction. It assumes that the predictions share one scale and origin, as CMR's (its SfM
  frame's) and ours (the prior's) roughly do;
- in both, prediction parts outside the cube are dropped, as there.
"""

from __future__ import annotations

import math
from typing import Optional

import torch


def winding_numbers(points: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor,
                    chunk_size: int = 1 << 17) -> torch.Tensor:
    """(P,) generalised winding numbers of points (P, 3) w.r.t. the mesh (vertices (V, 3), faces (F, 3)):
    the sum of the signed solid angles of the triangles seen from each point, over 4 pi
    (van Oosterom & Strackee's formula). float32, which is plenty for a test against 1/2;
    chunk_size bounds points x faces per step (small chunks are faster on CPU)."""
    corners = vertices.float()[faces.long()]                        # (F, 3, 3)
    first, second, third = corners.unbind(dim=1)
    points = points.float()
    rows = max(1, chunk_size // max(1, faces.shape[0]))
    out = []
    for start in range(0, points.shape[0], rows):
        p = points[start:start + rows, None, :]
        a, b, c = first - p, second - p, third - p                  # (p, F, 3)
        la, lb, lc = a.norm(dim=-1), b.norm(dim=-1), c.norm(dim=-1)
        det = (a * torch.linalg.cross(b, c)).sum(-1)
        denom = la * lb * lc + (a * b).sum(-1) * lc + (b * c).sum(-1) * la + (c * a).sum(-1) * lb
        out.append(torch.atan2(det, denom).sum(dim=1) / (2 * math.pi))   # solid angle = 2 atan2(...)
    return torch.cat(out) if out else points.new_zeros(0)


def voxel_centers(resolution: int, bounds: tuple[float, float] = (-0.5, 0.5), device=None) -> torch.Tensor:
    """(R^3, 3) centres of a resolution^3 grid over the cube [lo, hi]^3, index order (i, j, k) = (x, y, z)."""
    lo, hi = bounds
    axis = lo + (torch.arange(resolution, dtype=torch.float64, device=device) + 0.5) * (hi - lo) / resolution
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)


def ray_winding_grid(vertices: torch.Tensor, faces: torch.Tensor, resolution: int,
                     bounds: tuple[float, float] = (-0.5, 0.5), chunk_size: int = 1 << 21) -> torch.Tensor:
    """(R, R, R) winding numbers at the voxel centres of a closed mesh, by signed ray crossings: from
    each centre a ray goes up z; a face it crosses counts +1 if it faces up, -1 if down. Exact for a
    closed mesh (our deformed spheres) and about R^2 / R^3 of winding_numbers' cost."""
    lo, hi = bounds
    step = (hi - lo) / resolution
    axis = lo + (torch.arange(resolution, dtype=torch.float64, device=vertices.device) + 0.5) * step
    # Columns a hair off the centres: a ray through an edge or a vertex would count a crossing twice.
    x, y = torch.meshgrid(axis + step * 1.1e-7, axis + step * 1.7e-7, indexing="ij")
    columns = torch.stack([x.reshape(-1), y.reshape(-1)], dim=-1)            # (R^2, 2)
    tri = vertices.double()[faces.long()]                                   # (F, 3, 3)
    (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = (tri[:, i].unbind(-1) for i in range(3))
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)                     # twice the signed xy area
    keep = area.abs() > 1e-15                                               # faces seen edge-on never cross
    x0, y0, z0, x1, y1, z1, x2, y2, z2, area = (t[keep] for t in (x0, y0, z0, x1, y1, z1, x2, y2, z2, area))
    bins = torch.zeros(columns.shape[0], resolution + 1, dtype=torch.float64, device=vertices.device)
    rows = max(1, chunk_size // max(1, area.numel()))
    for start in range(0, columns.shape[0], rows):
        px, py = (c[:, None] for c in columns[start:start + rows].unbind(-1))
        l0 = ((x1 - px) * (y2 - py) - (x2 - px) * (y1 - py)) / area        # barycentric coordinates
        l1 = ((x2 - px) * (y0 - py) - (x0 - px) * (y2 - py)) / area
        l2 = 1 - l0 - l1
        hit = (l0 >= 0) & (l1 >= 0) & (l2 >= 0)
        column, face = hit.nonzero(as_tuple=True)
        z = (l0 * z0 + l1 * z1 + l2 * z2)[column, face]
        below = torch.ceil((z - axis[0]) / step).clamp(0, resolution).long()  # centres under the crossing
        bins.index_put_((column + start, below), torch.sign(area[face]), accumulate=True)
    # winding at centre k = crossings above it = sum of bins k + 1 .. R
    above = bins.flip(1).cumsum(1).flip(1)[:, 1:]
    return above.reshape(resolution, resolution, resolution)


def voxelize_mesh(vertices: torch.Tensor, faces: torch.Tensor, resolution: int = 32,
                  bounds: tuple[float, float] = (-0.5, 0.5), method: str = "winding") -> torch.Tensor:
    """(R, R, R) bool: voxels of the grid over [lo, hi]^3 whose centre is inside the mesh.

    method "winding": generalised winding numbers, for any mesh (also open or badly oriented ones);
    "ray": signed ray crossings, exact and much faster for closed meshes."""
    if vertices.dim() != 2 or vertices.shape[1] != 3 or faces.dim() != 2 or faces.shape[1] != 3:
        raise ValueError(f"expected vertices (V, 3) and faces (F, 3), got {tuple(vertices.shape)}, "
                         f"{tuple(faces.shape)}")
    if resolution < 1:
        raise ValueError(f"voxel resolution must be positive, got {resolution}")
    faces = faces.to(vertices.device)
    if method == "ray":
        return ray_winding_grid(vertices, faces, resolution, bounds).abs() > 0.5
    if method != "winding":
        raise ValueError(f"unknown voxelisation method {method!r} (winding, ray)")
    centers = voxel_centers(resolution, bounds, vertices.device)
    inside = winding_numbers(centers, vertices, faces).abs() > 0.5
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


def box_alignment(vertices: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(translation (3,), scale) that take vertices (V, 3) onto the box of target (V', 3) as
    (vertices + translation) * scale: translation = target box centre - vertices' box centre,
    scale = cube root of the ratio of box volumes (CMR's estimateTransform). That form puts the box
    centre at scale * the target's, which is the target's for a normalised CAD model (centre 0), and
    is what CMR's test-set average (iou_3d_global) applies to CAD models as stored."""
    center, size = bounding_box(vertices.double())
    target_center, target_size = bounding_box(target.double())
    volume = float(size.prod())
    if not volume > 0:
        raise ValueError("the predicted mesh is flat (its bounding box has no volume)")
    return target_center - center, (float(target_size.prod()) / volume) ** (1.0 / 3.0)


def align_to_cad(pred_vertices: torch.Tensor, cad_vertices: torch.Tensor,
                 alignment: Optional[tuple[torch.Tensor, float]] = None,
                 normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction, CAD model) in the voxel grid's frame, both taken in the same object frame (see the
    module doc): the CAD model normalised (box centred, longest side 1; normalize=False: as stored),
    the prediction moved by `alignment` ((translation, scale) as box_alignment gives; None = its own
    box_alignment to this CAD model)."""
    cad = normalize_to_unit_cube(cad_vertices.double()) if normalize else cad_vertices.double()
    pred = pred_vertices.double()
    translation, scale = alignment if alignment is not None else box_alignment(pred, cad)
    return (pred + translation.to(pred)) * scale, cad


def cad_iou_3d(pred_vertices: torch.Tensor, pred_faces: torch.Tensor, cad_vertices: torch.Tensor,
               cad_faces: torch.Tensor, resolution: int = 32, cad_voxels: torch.Tensor | None = None,
               alignment: Optional[tuple[torch.Tensor, float]] = None, normalize: bool = True) -> float:
    """3D IoU of a predicted mesh (closed: voxelised by ray crossings) and a CAD model (possibly open:
    winding numbers), see the module doc; cad_voxels: the CAD model's grid, if already computed (it
    depends on the model, the resolution and `normalize` only); alignment, normalize: see align_to_cad."""
    pred, cad = align_to_cad(pred_vertices, cad_vertices, alignment, normalize)
    if cad_voxels is None:
        cad_voxels = voxelize_mesh(cad, cad_faces, resolution)
    return voxel_iou(voxelize_mesh(pred, pred_faces, resolution, method="ray"), cad_voxels)
