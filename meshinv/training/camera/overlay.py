"""How well a camera explains a mask: the overlay IoU of the mask with the silhouette of a mean shape
seen through the camera (the original's `pred_pose_overlay_iou`; inversion trusts a predicted
camera only above TRUSTED_IOU, docs/method.md section 6), and where that shape comes from.

The mean shape is, in order of preference: a `mean_shape` file given in the config, the one stored
in the predictor's checkpoint (training stores its `mean_shape`, else the SfM mean shape of a CUB /
PASCAL3D+ split, else the mean ground-truth shape of a synthetic split), or the undeformed
template (a sphere: its silhouette ignores the rotation, so its IoU only checks scale and
translation).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ...data.camera_predictions import TRUSTED_OVERLAY_IOU as TRUSTED_IOU
from ...data.sample import DataError
from ...geometry.camera import WeakPerspectiveCamera
from ...geometry.template import MeshTemplate
from ...render.settings import Renderer, make_renderer
from ...utils.masks import mask_iou

log = logging.getLogger(__name__)



def overlay_iou(cameras: torch.Tensor, masks: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor,
                renderer: Optional[Renderer] = None) -> torch.Tensor:
    """(B,) IoU of (B, 1, H, W) masks with the silhouette of one (V, 3) shape seen through (B, 7)
    cameras, rendered at the masks' resolution."""
    renderer = renderer or make_renderer(tuple(masks.shape[-2:]))
    vertices = vertices.to(cameras)[None].expand(cameras.shape[0], -1, -1)
    ndc = WeakPerspectiveCamera.from_tensor(cameras).transform(vertices)
    silhouette = renderer.rasterize(ndc, faces.to(cameras.device)).mask
    return mask_iou(silhouette[:, 0], masks.to(cameras.device)[:, 0]).float()


@dataclass
class OverlayShape:
    """The shape whose silhouette scores a predicted camera: vertices (V, 3), faces (F, 3)."""

    vertices: torch.Tensor
    faces: torch.Tensor
    source: str

    def to_extra(self) -> dict:
        return {"overlay_vertices": self.vertices.detach().cpu().float(), "overlay_faces": self.faces.cpu().long(),
                "overlay_source": self.source}

    @classmethod
    def from_extra(cls, checkpoint: dict) -> Optional["OverlayShape"]:
        if "overlay_vertices" not in checkpoint:
            return None
        return cls(checkpoint["overlay_vertices"], checkpoint["overlay_faces"], str(checkpoint.get("overlay_source")))

    @classmethod
    def template(cls, template: MeshTemplate) -> "OverlayShape":
        return cls(template.vertices.cpu(), template.faces.cpu(), "template (undeformed)")


def load_mean_shape(path: str | Path, template: MeshTemplate) -> OverlayShape:
    """A mean shape from an .npz: `vertices` (V, 3) with optional `faces` (F, 3) (else the
    template's), or a `deformation_map` (3, H, W) of the template."""
    path = Path(path)
    try:
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the mean shape ({e})") from None
    if "vertices" in arrays:
        vertices = torch.from_numpy(arrays["vertices"]).float()
        faces = torch.from_numpy(arrays["faces"]).long() if "faces" in arrays else template.faces.cpu()
    elif "deformation_map" in arrays:
        with torch.no_grad():
            vertices = template.vertex_positions(torch.from_numpy(arrays["deformation_map"]).float()[None])[0].cpu()
        faces = template.faces.cpu()
    else:
        raise DataError(f"{path}: a mean shape needs `vertices` (V, 3) or `deformation_map` (3, H, W)")
    if vertices.dim() != 2 or vertices.shape[1] != 3 or int(faces.max()) >= vertices.shape[0]:
        raise DataError(f"{path}: vertices {tuple(vertices.shape)} do not fit faces indexing {int(faces.max()) + 1}")
    return OverlayShape(vertices, faces, str(path))


def ground_truth_mean_shape(gt_dir: Path, template: MeshTemplate) -> Optional[OverlayShape]:
    """Mean of the ground-truth vertices (synthetic data: <split>/gt/*.npz), or None if absent
    or not on this template."""
    paths = sorted(gt_dir.glob("*.npz")) if gt_dir.is_dir() else []
    if not paths:
        return None
    total = None
    for path in paths:
        with np.load(path) as gt:
            if "vertices" not in gt.files:
                return None
            vertices = gt["vertices"].astype(np.float64)
        if vertices.shape != (template.num_vertices, 3):
            log.warning("%s: %d ground-truth vertices, but the template has %d: mean shape not used",
                        path, vertices.shape[0], template.num_vertices)
            return None
        total = vertices if total is None else total + vertices
    mean = torch.from_numpy(total / len(paths)).float()
    return OverlayShape(mean, template.faces.cpu(), f"mean ground-truth shape of {len(paths)} images in {gt_dir}")


def overlay_shape(template: MeshTemplate, mean_shape: Optional[str] = None, checkpoint: Optional[dict] = None,
                  dataset=None, gt_dir: Optional[Path] = None) -> OverlayShape:
    """The shape that scores cameras, in order of preference: the `mean_shape` file (camera.mean_shape);
    the one a predictor `checkpoint` stores; the SfM mean shape of `dataset` (the CUB / PASCAL3D+
    readers expose `mean_shape` (K, 3) and its hull `mean_shape_faces`); the mean ground-truth shape
    in `gt_dir` (a synthetic split's gt/); else the undeformed template."""
    if mean_shape:
        return load_mean_shape(mean_shape, template)
    stored = OverlayShape.from_extra(checkpoint) if checkpoint is not None else None
    if stored is not None:
        return stored
    vertices, faces = getattr(dataset, "mean_shape", None), getattr(dataset, "mean_shape_faces", None)
    if isinstance(vertices, torch.Tensor) and isinstance(faces, torch.Tensor):
        source = getattr(dataset, "sfm_path", "the dataset")
        return OverlayShape(vertices.float(), faces.long(), f"SfM mean shape of {source}")
    ground_truth = ground_truth_mean_shape(gt_dir, template) if gt_dir is not None else None
    return ground_truth or OverlayShape.template(template)
