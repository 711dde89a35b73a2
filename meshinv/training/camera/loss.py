"""CMR's camera loss (akanazawa/cmr `nnutils/loss_utils.py: camera_loss` with margin 0):

    L = mean over (s, tx, ty) of the squared error  +  mean over images of (1 - |<q, q_gt>|)

<q, q_gt> is the real part of q * conj(q_gt), cos(angle / 2), so q and -q, the same rotation, cost
the same. (Not 1 - <q, q_gt>^2: CMR's geodesic version takes the absolute value.)
"""

from __future__ import annotations

from typing import Optional

import torch

from ...geometry.camera import normalize_quaternion, quaternion_to_matrix
from .config import ROTATION_LOSSES


def camera_loss(pred: torch.Tensor, target: torch.Tensor, rotation_weight: float = 1.0,
                scale_translation_weight: float = 1.0, rotation_loss: str = "quaternion",
                pred_rotation: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
    """CMR's camera loss of (B, 7) cameras (the module docstring); `total` is the weighted sum.

    rotation_loss="matrix" replaces the quaternion term by the mean squared Frobenius distance of the
    rotation matrices, 8 sin^2(angle / 2): the same ordering of errors, the usual loss of a 6D head.
    It uses `pred_rotation` (B, 3, 3) when given (CameraPredictor.predict returns it), else the
    matrix of the predicted quaternion.
    """
    if rotation_loss == "quaternion":
        q = normalize_quaternion(pred[:, 3:])
        q_gt = normalize_quaternion(target[:, 3:])
        rotation = (1 - (q * q_gt).sum(-1).abs()).mean()
    elif rotation_loss == "matrix":
        if pred_rotation is None:
            pred_rotation = quaternion_to_matrix(normalize_quaternion(pred[:, 3:]))
        target_rotation = quaternion_to_matrix(normalize_quaternion(target[:, 3:]))
        rotation = ((pred_rotation - target_rotation) ** 2).sum((-2, -1)).mean()
    else:
        raise ValueError(f"rotation_loss must be one of {ROTATION_LOSSES}, got {rotation_loss!r}")
    squared = (pred[:, :3] - target[:, :3]) ** 2
    scale_translation = squared.mean()
    return {"total": rotation_weight * rotation + scale_translation_weight * scale_translation,
            "rotation": rotation, "scale_translation": scale_translation,
            "scale": squared[:, 0].mean().detach(), "translation": squared[:, 1:].mean().detach()}
