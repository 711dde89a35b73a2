"""The inversion section of an experiment config (SPEC sections 6 and 7; defaults are the paper's)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..data.preprocess import CropConfig


def _inversion_crop() -> CropConfig:
    # The original binarises the resized target mask at 0.95.
    return CropConfig(img_size=256, padding=0.05, jitter=0.0, mask_threshold=0.95)


@dataclass
class InversionLossConfig:
    """Weights and parameters of the inversion objective (a weight of 0 turns a term off)."""

    mask_weight: float = 10.0        # Chamfer mask loss
    pixel_weight: float = 1.0        # pixel-level Chamfer texture loss
    feature_weight: float = 0.04     # VGG-19 feature-level Chamfer texture loss
    smoothness_weight: float = 0.0   # off in the paper's inversion (5e-5 when on)
    nll_weight: float = 0.05         # latent norm
    xy_threshold: float = 0.16
    xy_k: float = 1.0
    xy_alpha: float = 1.0
    rgb_eps: float = 1.0
    subpool_threshold: float = 0.5   # a VGG cell is used where >= this share of its pixels is foreground
    # The original subsamples 8192 points per side at random each step; None uses every point.
    subsample_points: Optional[int] = None
    chunk_size: int = 1 << 18        # (query, reference) pairs per tile of the nearest-neighbour search
    vgg_weights: Optional[str] = None      # default: vgg19-dcbb9e9d.pth from the pretrained folders
    allow_random_vgg: bool = False         # tests and smoke runs only: random VGG weights, logged loudly


@dataclass
class CameraInitConfig:
    """Where the starting camera of each image comes from, in order of preference:
    a camera-predictor checkpoint, a predictions file (the original's cmr_pred_cam.pth format),
    then the dataset's own camera (SfM pose, or the synthetic ground truth), optionally perturbed."""

    predictor: Optional[str] = None      # camera-predictor checkpoint (scripts/train_camera.py)
    predictions: Optional[str] = None    # {image stem: {pred_cam: (7,), pred_pose_overlay_iou: float}}
    min_prediction_iou: float = 0.7      # predictions whose overlay IoU is not above this are ignored
    # Perturbation of the dataset camera (to emulate a predicted one on synthetic data): a rotation by
    # exactly this angle about a random axis, a shift of this fraction of the image side in a random
    # direction, and a scale change by this fraction, up or down at random.
    noise_rotation_deg: float = 0.0
    noise_translation: float = 0.0
    noise_scale: float = 0.0


@dataclass
class ExportConfig:
    """What is written per image besides result.pt."""

    mesh: bool = True                  # mesh.obj + mesh.mtl + mesh.png
    turntable_frames: int = 24         # 0 = no turntable.gif
    turntable_size: int = 128
    turntable_ms_per_frame: int = 80


@dataclass
class InversionConfig:
    """scripts/invert.py: reconstruct every image of a dataset with a pretrained prior."""

    checkpoint: str = "pretrained/synthetic_prior_ours.pt"
    data: str = "datasets/synthetic/test"
    # A folder of raw photos (directly inside, or in images/): masks are segmented automatically
    # (the `segment` section) where none is given, and cached in OUT/masks. Overrides `data`.
    images: Optional[str] = None
    auto_masks: bool = False                 # segment images of `data` that have no mask, too
    split: Optional[str] = None              # dataset split (None: the dataset kind's default, test / val)
    data_options: dict = field(default_factory=dict)  # passed to the dataset, e.g. {use_predicted_mask: true}
    out_dir: str = "outputs/inversion"
    limit: Optional[int] = None              # only the first N images of the dataset
    image_ids: list[str] = field(default_factory=list)   # only these images (empty = all)
    crop: CropConfig = field(default_factory=_inversion_crop)   # img_size is the working resolution
    batch_size: int = 8                      # images optimised together (independent per image)
    seed: int = 1234                         # with the image id, seeds each image's z candidates
    select_num: int = 500                    # random z scored to pick the start
    init_batch_size: int = 100               # candidates scored per forward pass (all images together)
    iterations: list[int] = field(default_factory=lambda: [50, 50, 50, 50])
    z_lrs: list[float] = field(default_factory=lambda: [1e-1, 5e-2, 1e-2, 5e-3])
    camera_lrs: list[float] = field(default_factory=lambda: [1e-2, 5e-3, 1e-3, 5e-4])
    betas: tuple[float, float] = (0.0, 0.99)
    warm_up: int = 0                         # linear learning-rate warm-up, in iterations
    optimise_camera: bool = True
    # The reference implementation recomputes the target's VGG features every step; True reproduces
    # that cost (for the speed comparison), the result is the same.
    recompute_target_features: bool = False
    loss: InversionLossConfig = field(default_factory=InversionLossConfig)
    camera_init: CameraInitConfig = field(default_factory=CameraInitConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    tensorboard: bool = False                # per-image loss curves under OUT/tensorboard

    def validate(self) -> None:
        stages = len(self.iterations)
        if len(self.z_lrs) != stages or len(self.camera_lrs) != stages:
            raise ValueError(f"inversion: iterations, z_lrs and camera_lrs need one entry per stage "
                             f"(got {stages}, {len(self.z_lrs)}, {len(self.camera_lrs)})")
        if self.crop.img_size % 4:
            raise ValueError(f"inversion.crop.img_size must be a multiple of 4 (VGG cells), got {self.crop.img_size}")
        if self.batch_size < 1 or self.select_num < 1 or self.init_batch_size < 1:
            raise ValueError("inversion: batch_size, select_num and init_batch_size must be >= 1")
