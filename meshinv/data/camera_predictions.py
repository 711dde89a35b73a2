"""The camera-predictions file: MeshInversion's `cmr_pred_cam.pth` format, its reader, its entries and
the trust rule. The camera trainer writes it (meshinv/training/camera.py: predict_cameras), CUB
releases ship one (meshinv/data/cub.py), and inversion reads it (meshinv/inversion/camera_init.py).

    {image stem: {"pred_cam": (7,) [s, tx, ty, qw, qx, qy, qz], "pred_pose_overlay_iou": float}}

saved with torch.save and loadable with weights_only=True. The cameras are in the NDC of the
image's crop; the overlay IoU is that of the mask and a mean shape seen through the predicted
camera, which says how far the prediction can be trusted.
"""

from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .sample import DataError

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "cmr_pred_cam.pth"   # the file's name in a dataset folder (CUB: cache/cmr_pred_cam.pth)
# The original starts inversion from a predicted camera only when its overlay IoU is above this
# (docs/method.md section 6); the camera trainer reports the share of predictions above it.
TRUSTED_OVERLAY_IOU = 0.7


@dataclass(frozen=True)
class CmrCameraPrediction:
    """One entry of cmr_pred_cam.pth. camera (7,) [s, tx, ty, qw, qx, qy, qz] in the NDC of the
    original's crop (padding 0.05, no jitter, not mirrored): the same crop as ours up to rounding,
    and, like every camera of the original, within half a pixel of our convention (not corrected:
    inversion optimises the camera anyway). overlay_iou: IoU of its rendered mean shape and the mask."""

    camera: torch.Tensor
    overlay_iou: float


def load_cmr_predicted_cameras(path: str | os.PathLike, trusted: bool = False) -> dict[str, CmrCameraPrediction]:
    """Read the original's cmr_pred_cam.pth: {image stem: {pred_cam: (7,), pred_pose_overlay_iou}}.

    Loaded with weights_only (tensors, numbers, dicts); a file that needs more (e.g. numpy arrays)
    is refused unless `trusted`, which unpickles it: only for a download you trust."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: CMR camera predictions not found")
    if trusted:
        log.warning("%s: loading with full unpickling (trusted=True)", path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=not trusted)
    except pickle.UnpicklingError as e:
        raise DataError(f"{path}: holds objects a weights-only load refuses; load it with trusted=True only if "
                        f"you trust the file ({str(e).splitlines()[0]})") from None
    except (OSError, RuntimeError, EOFError) as e:
        raise DataError(f"{path}: cannot read camera predictions ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a dict keyed by image stem, got {type(data).__name__}")
    out = {}
    for key, item in data.items():
        where = f"{path}[{key!r}]"
        if not isinstance(item, dict) or "pred_cam" not in item or "pred_pose_overlay_iou" not in item:
            raise DataError(f"{where}: expected a dict with pred_cam and pred_pose_overlay_iou")
        try:
            camera = torch.as_tensor(np.asarray(item["pred_cam"], dtype=np.float32)).reshape(-1)
            iou = float(np.asarray(item["pred_pose_overlay_iou"], dtype=np.float64).reshape(()))
        except (TypeError, ValueError) as e:
            raise DataError(f"{where}: pred_cam must be 7 numbers and pred_pose_overlay_iou one ({e})") from None
        if camera.numel() != 7 or not torch.isfinite(camera).all():
            raise DataError(f"{where}: pred_cam must be 7 finite numbers [s, tx, ty, qw, qx, qy, qz], "
                            f"got {camera.numel()}")
        out[str(key)] = CmrCameraPrediction(camera, iou)
    log.info("%s: %d camera predictions", path, len(out))
    return out


def select_camera(dataset_camera: Optional[torch.Tensor], prediction: Optional[CmrCameraPrediction],
                  min_iou: float = TRUSTED_OVERLAY_IOU) -> tuple[Optional[torch.Tensor], str]:
    """The original's choice of starting camera: the prediction if its overlay IoU is above
    `min_iou`, else the dataset's (SfM) camera. Returns (camera, "prediction" | "dataset")."""
    if prediction is not None and prediction.overlay_iou > min_iou:
        return prediction.camera.clone(), "prediction"
    return dataset_camera, "dataset"


def prediction_entry(camera: torch.Tensor, overlay_iou: float) -> dict:
    """One entry of the file, as the original writes it."""
    return {"pred_cam": camera.detach().cpu().float().clone(), "pred_pose_overlay_iou": float(overlay_iou)}
