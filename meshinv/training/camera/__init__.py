"""Training and running the CMR-style camera predictor (meshinv.models.camera).

Training regresses each image's dataset camera (`Sample.camera`: the synthetic ground truth, the
annotations of a folder, or the SfM poses of the CUB / PASCAL3D+ readers) with CMR's camera loss,
on images augmented together with their cameras. By concern:

    config.py    the `camera` section (training) and `camera.predict` (prediction)
    data.py      the datasets (through meshinv.data.datasets.open_dataset; every image must carry a
                 camera), the in-memory cache of decoded crops, the augmentation
    loss.py      CMR's camera loss
    overlay.py   the overlay IoU of a mask with a mean shape under a camera, and that mean shape
    evaluate.py  camera errors on held-out data; predictions in the original's cmr_pred_cam.pth format
    trainer.py   the resumable training loop (train_camera)
"""

from .config import ROTATION_LOSSES, CameraPredictConfig, CameraTrainConfig, LrDecay, RotationLoss
from .data import Augmentation, CachedSamples, cache_samples, camera_dataset
from .evaluate import camera_errors, evaluate_predictor, predict_cameras, predict_folder_cameras
from .loss import camera_loss
from .overlay import (
    TRUSTED_IOU, OverlayShape, ground_truth_mean_shape, load_mean_shape, overlay_iou, overlay_shape,
)
from .trainer import FINAL, LATEST, CameraTrainer, scheduled_lr, train_camera

__all__ = [
    "ROTATION_LOSSES", "CameraPredictConfig", "CameraTrainConfig", "LrDecay", "RotationLoss", "Augmentation",
    "CachedSamples", "cache_samples", "camera_dataset", "camera_errors", "evaluate_predictor", "predict_cameras",
    "predict_folder_cameras", "camera_loss", "TRUSTED_IOU", "OverlayShape",
    "ground_truth_mean_shape", "load_mean_shape", "overlay_iou", "overlay_shape", "FINAL", "LATEST", "CameraTrainer",
    "scheduled_lr", "train_camera",
]
