"""Running a camera predictor: its errors on held-out cameras, and predictions for a dataset in the
original's `cmr_pred_cam.pth` format (per image stem, `pred_cam` (7,) and `pred_pose_overlay_iou`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from ...data.camera_predictions import prediction_entry
from ...data.folder import FolderDataset
from ...data.preprocess import CropConfig
from ...data.sample import DataError
from ...data.segment import SegmentConfig, images_without_masks, segment_missing
from ...geometry.camera import rotation_angle_deg
from ...geometry.template import TemplateConfig, build_template
from ...models.camera import CameraPredictor
from ...render.settings import make_renderer
from .data import CachedSamples
from .overlay import TRUSTED_IOU, OverlayShape, overlay_iou

log = logging.getLogger(__name__)


def camera_errors(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image errors of (B, 7) cameras: rotation (degrees, geodesic), translation (NDC distance
    of (tx, ty), 1 = half the crop side) and scale (|s - s_gt| / s_gt)."""
    return {"rotation_error_deg": rotation_angle_deg(pred[:, 3:], target[:, 3:]),
            "translation_error": (pred[:, 1:3] - target[:, 1:3]).norm(dim=-1),
            "scale_error": (pred[:, 0] - target[:, 0]).abs() / target[:, 0].abs().clamp(min=1e-8)}


@torch.no_grad()
def predict_cameras(model: CameraPredictor, dataset, device: torch.device, batch_size: int = 32,
                    shape: Optional[OverlayShape] = None, num_workers: int = 0) -> dict[str, dict]:
    """Predict the camera of every Sample of `dataset`, in the original's `cmr_pred_cam.pth` format:
    {image_id: {"pred_cam": (7,) float32 tensor [s, tx, ty, qw, qx, qy, qz],
                "pred_pose_overlay_iou": float}}.

    The IoU compares each sample's mask with the silhouette of `shape` (default: the 16-ring
    template sphere) under the predicted camera, at the sample's crop resolution.
    """
    if shape is None:
        shape = OverlayShape.template(build_template(TemplateConfig()))
    model = model.to(device).eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         collate_fn=list)
    renderer = None
    out: dict[str, dict] = {}
    for samples in tqdm(loader, desc="predict cameras", unit="batch"):
        images = torch.stack([s.image for s in samples]).to(device)
        masks = torch.stack([s.mask for s in samples]).to(device)
        cameras = model(images, masks)
        if renderer is None or renderer.image_size != tuple(masks.shape[-2:]):
            renderer = make_renderer(tuple(masks.shape[-2:]))
        ious = overlay_iou(cameras, masks, shape.vertices.to(device), shape.faces.to(device), renderer)
        for sample, camera, iou in zip(samples, cameras.cpu(), ious.cpu()):
            if sample.image_id in out:
                raise DataError(f"{sample.source}: image id {sample.image_id!r} appears twice")
            out[sample.image_id] = prediction_entry(camera, float(iou))
    return out


@torch.no_grad()
def evaluate_predictor(model: CameraPredictor, data: CachedSamples, device: torch.device, batch_size: int = 32,
                       shape: Optional[OverlayShape] = None) -> dict[str, float]:
    """Median (and mean) rotation, translation and scale errors on held-out cached samples; with
    masks and a shape, also the overlay IoU of predicted and of ground-truth cameras."""
    was_training = model.training
    model.eval()
    preds = []
    for start in range(0, len(data), batch_size):
        images, _, masks = data.batch(range(start, min(start + batch_size, len(data))), device)
        preds.append(model(images, masks).cpu())
    model.train(was_training)
    pred = torch.cat(preds)
    errors = camera_errors(pred, data.cameras)
    result: dict[str, float] = {"images": len(data)}
    for name, values in errors.items():
        result[f"{name}_median"] = float(values.median())
        result[f"{name}_mean"] = float(values.mean())
    result["rotation_within_30deg"] = float((errors["rotation_error_deg"] < 30).float().mean())
    if data.masks is not None and shape is not None:
        renderer = make_renderer(tuple(data.masks.shape[-2:]))
        for name, cameras in (("pred", pred), ("gt", data.cameras)):
            ious = torch.cat([overlay_iou(cameras[i:i + batch_size].to(device), data.masks[i:i + batch_size],
                                          shape.vertices.to(device), shape.faces.to(device), renderer).cpu()
                              for i in range(0, len(data), batch_size)])
            result[f"overlay_iou_{name}_mean"] = float(ious.mean())
            result[f"overlay_iou_{name}_above_{TRUSTED_IOU}"] = float((ious > TRUSTED_IOU).float().mean())
    return result


def predict_folder_cameras(model: CameraPredictor, root: str | Path, padding: float, device: torch.device,
                           batch_size: int = 32, shape: Optional[OverlayShape] = None,
                           segment: Optional[SegmentConfig] = None) -> dict[str, dict]:
    """predict_cameras for the photos of a folder-format `root` (meshinv.data.folder), cropped with
    `padding` at the model's resolution. With `segment`, photos without a mask are segmented first
    (into root/masks/); photos still without one are left out, with a warning."""
    dataset = FolderDataset(root, CropConfig(img_size=model.image_size, padding=padding))
    if segment is not None:
        segment_missing(dataset, Path(root) / "masks", segment, device)
    without = {path.stem for path in images_without_masks(dataset)}
    if without:
        log.warning("%d of %d images have no mask in %s and are left out", len(without), len(dataset),
                    dataset.mask_dirs[0])
    with_mask = [i for i, path in enumerate(dataset.image_paths) if path.stem not in without]
    return predict_cameras(model, torch.utils.data.Subset(dataset, with_mask), device, batch_size, shape)
