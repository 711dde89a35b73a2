"""The camera predictor's settings: training (the `camera` YAML section) and prediction (`camera.predict`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal, Optional, get_args

from ...data.datasets import DATASET_KINDS
from ...data.preprocess import CropConfig
from ...models.camera import RotationHead
from ...utils.config import at_least, check, greater_than, require
from ..config import check_adam_betas

LrDecay = Literal["none", "cosine"]
RotationLoss = Literal["quaternion", "matrix"]
ROTATION_LOSSES = get_args(RotationLoss)


@dataclass
class CameraPredictConfig:
    """scripts/predict_cameras.py: cameras for a folder of photos (the `camera.predict` section)."""

    data: Optional[str] = None         # folder-format root (images/, masks/); --data
    checkpoint: Optional[str] = None   # None: <camera.out_dir>/camera_predictor.pt; --checkpoint
    out: Optional[str] = None          # None: <data>/cmr_pred_cam.pth; --out
    batch_size: int = 32
    auto_masks: bool = False           # segment images without masks/<stem>.png first (the `segment` section)

    def validate(self) -> None:
        at_least(self, 1, "batch_size")


@dataclass
class CameraTrainConfig:
    """The camera predictor: data, architecture, training (the `camera` YAML section)."""

    dataset: str = "folder"            # kind of <data> (meshinv.data.datasets): folder | synthetic | cub | p3d
    data: str = "datasets/synthetic"
    train_split: str = "train"
    eval_split: Optional[str] = "val"  # held-out split of the final evaluation (None: no evaluation)
    out_dir: str = "runs/camera"
    image_size: int = 128              # predictor input, a multiple of 64 (CMR: 256)
    padding: float = 0.05              # crop box padding; must match the crops that use the cameras
    feature_dim: int = 200             # CMR's nz_feat
    pretrained_trunk: bool = True      # ImageNet ResNet-18 (pretrained/README.md)
    allow_random_trunk: bool = False   # a missing ResNet-18 file: warn and train from scratch instead of failing
    seed: int = 0
    batch_size: int = 16
    max_steps: int = 3000
    lr: float = 1.0e-4                 # Adam, CMR's settings
    betas: tuple[float, float] = (0.9, 0.999)
    rotation_head: RotationHead = "quaternion"  # quaternion (CMR) | 6d (continuous; meshinv.models.camera)
    masked_input: bool = False         # predict from the masked object (background -> white); needs masks
    rotation_loss: RotationLoss = "quaternion"  # quaternion: CMR's 1 - |<q, q_gt>| | matrix: |R - R_gt|_F^2
    lr_decay: LrDecay = "none"         # none (CMR) | cosine: lr * (1 + cos(pi t / max_steps)) / 2
    rotation_weight: float = 1.0
    scale_translation_weight: float = 1.0
    mirror: bool = True                # mirror half of the images (with their cameras)
    zoom: float = 0.05                 # crop zoom factor uniform in [1 - zoom, 1 + zoom]
    shift: float = 0.1                 # crop shift uniform in [-shift, shift] NDC (0.1 = 5% of the side)
    num_workers: int = 0               # processes decoding images into the cache
    log_every: int = 10
    eval_every: int = 500              # also at the end; 0 = only at the end
    checkpoint_every: int = 200
    eval_batch_size: int = 32
    mean_shape: Optional[str] = None   # .npz with `vertices` (V, 3) [+ `faces`] or `deformation_map` (3, H, W)
    export: Optional[str] = None       # also write the final model here with int8 weights (a checkpoint to ship)
    predict: CameraPredictConfig = field(default_factory=CameraPredictConfig)

    # What a resumed run may change: where it writes, how long it runs (a cosine decay then follows
    # the new length), what it logs and evaluates, and prediction (a separate script).
    RUN_ONLY: ClassVar[tuple[str, ...]] = (
        "out_dir", "max_steps", "num_workers", "allow_random_trunk", "log_every", "eval_split", "eval_every",
        "checkpoint_every", "eval_batch_size", "predict", "export")

    def validate(self) -> None:
        require(self.dataset in DATASET_KINDS, "dataset",
                f"must be one of {', '.join(DATASET_KINDS)} (the kinds of meshinv.data.datasets), got {self.dataset!r}")
        require(self.image_size >= 64 and self.image_size % 64 == 0, "image_size",
                f"must be a positive multiple of 64, got {self.image_size}")
        at_least(self, 1, "feature_dim", "batch_size", "max_steps", "log_every", "checkpoint_every", "eval_batch_size")
        at_least(self, 0, "padding", "rotation_weight", "scale_translation_weight", "shift", "num_workers",
                 "eval_every")
        greater_than(self, 0, "lr")
        check(self, ["zoom"], lambda v: 0 <= v < 1, "in [0, 1)")  # the zoom factor 1 - zoom stays positive
        check_adam_betas(self)

    def crop(self) -> CropConfig:
        # No box jitter at decode time: images are cached once; the zoom/shift augmentation replaces it.
        return CropConfig(img_size=self.image_size, padding=self.padding, jitter=0.0)
