"""The inversion section of an experiment config (SPEC sections 6 and 7; defaults are the paper's).

Two halves, one flat YAML section (`inversion:`):
    InversionAlgorithm  what decides an image's result: crop, z search, schedule, losses, seed,
                        starting camera. The engine (Inverter) sees only this.
    InversionJob        which images, from where, into which folder, what is exported and logged,
                        how many are optimised together. Changing it never changes a result.
InversionConfig has the fields of both; `.algorithm` and `.job` give each half. The resume guard
(meshinv/inversion/output.py) compares the algorithm and ignores the settings a class lists in
`RUN_ONLY`: every job key (derived from InversionJob's fields), and the algorithm's keys that change
how much is computed at once, not what (results agree up to float rounding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Optional, TypeVar

from ..data.preprocess import CropConfig
from ..utils.config import ConfigError

T = TypeVar("T")


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
    chamfer_pruning: bool = True     # pixel Chamfer search skips pairs that cannot be nearest (same results)
    vgg_weights: Optional[str] = None      # default: vgg19-dcbb9e9d.pth from the pretrained folders
    allow_random_vgg: bool = False         # tests and smoke runs only: random VGG weights, logged loudly

    RUN_ONLY = ("chunk_size",)  # how much is computed at once, not what

    def validate(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"inversion.loss.{f.name} must be a finite number >= 0, got {value!r}")
        if self.subsample_points is not None:
            _at_least(1, "inversion.loss.subsample_points", self.subsample_points)
        _at_least(1, "inversion.loss.chunk_size", self.chunk_size)


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

    def validate(self) -> None:
        for key in ("min_prediction_iou", "noise_rotation_deg", "noise_translation", "noise_scale"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"inversion.camera_init.{key} must be a finite number >= 0, got {value!r}")
        if self.noise_scale >= 1:
            raise ConfigError(f"inversion.camera_init.noise_scale must be < 1 (a scale change of that fraction), "
                              f"got {self.noise_scale!r}")


@dataclass
class ExportConfig:
    """What is written per image besides result.pt."""

    mesh: bool = True                  # mesh.obj + mesh.mtl + mesh.png
    turntable_frames: int = 24         # 0 = no turntable.gif
    turntable_size: int = 128
    turntable_ms_per_frame: int = 80

    def validate(self) -> None:
        _at_least(0, "inversion.export.turntable_frames", self.turntable_frames)
        _at_least(1, "inversion.export.turntable_size", self.turntable_size)
        _at_least(1, "inversion.export.turntable_ms_per_frame", self.turntable_ms_per_frame)


def _project(config, cls: type[T]) -> T:
    return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})


def _at_least(minimum: float, key: str, value: float) -> None:
    if not value >= minimum:  # also refuses NaN
        raise ConfigError(f"{key} must be >= {minimum}, got {value!r}")


def _positive_finite(key: str, values) -> None:
    for i, value in enumerate(values):
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{key}[{i}] must be a finite number > 0, got {value!r}")


@dataclass
class InversionAlgorithm:
    """What decides an image's result (the engine's whole configuration)."""

    crop: CropConfig = field(default_factory=_inversion_crop)   # img_size is the working resolution
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

    RUN_ONLY = ("init_batch_size", "recompute_target_features")  # how much is computed at once, not what

    def validate(self) -> None:
        """Raise ConfigError naming the first key (inversion.*) that no run could use."""
        size = self.crop.img_size
        if size < 4 or size % 4:
            raise ConfigError(f"inversion.crop.img_size must be a positive multiple of 4 (VGG cells), got {size}")
        _at_least(1, "inversion.select_num", self.select_num)
        _at_least(1, "inversion.init_batch_size", self.init_batch_size)
        _at_least(0, "inversion.warm_up", self.warm_up)
        if not self.iterations:
            raise ConfigError("inversion.iterations must list at least one stage, got []")
        for i, count in enumerate(self.iterations):
            _at_least(1, f"inversion.iterations[{i}]", count)
        stages = len(self.iterations)
        if len(self.z_lrs) != stages or len(self.camera_lrs) != stages:
            raise ConfigError(f"inversion.iterations, inversion.z_lrs and inversion.camera_lrs need one entry per "
                              f"stage (got {stages}, {len(self.z_lrs)}, {len(self.camera_lrs)})")
        _positive_finite("inversion.z_lrs", self.z_lrs)
        _positive_finite("inversion.camera_lrs", self.camera_lrs)
        for i, beta in enumerate(self.betas):
            if not 0 <= beta < 1:
                raise ConfigError(f"inversion.betas[{i}] must be in [0, 1), got {beta!r}")
        self.loss.validate()
        self.camera_init.validate()

    @property
    def algorithm(self) -> "InversionAlgorithm":
        """These settings alone (a new object sharing the nested sections; drops an InversionConfig's
        job keys)."""
        return _project(self, InversionAlgorithm)


@dataclass
class InversionJob:
    """Which images are inverted, from where, into which folder, and what is written besides the
    results (scripts/invert.py). None of it changes an image's result."""

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
    batch_size: int = 8                      # images optimised together (each independent of the others)
    export: ExportConfig = field(default_factory=ExportConfig)
    tensorboard: bool = False                # per-image loss curves under OUT/tensorboard

    @property
    def data_root(self) -> str:
        """What is inverted: `images` (raw photos) overrides `data`."""
        return self.images or self.data

    def validate(self) -> None:
        """Raise ConfigError naming the first key (inversion.*) that no run could use."""
        if self.limit is not None and self.limit < 0:
            raise ConfigError(f"inversion.limit must be >= 0 or null, got {self.limit}")
        _at_least(1, "inversion.batch_size", self.batch_size)
        for key in ("checkpoint", "out_dir"):
            if not getattr(self, key):
                raise ConfigError(f"inversion.{key} must not be empty")
        if not (self.images or self.data):
            raise ConfigError("inversion.data (or inversion.images) must not be empty")
        self.export.validate()

    @property
    def job(self) -> "InversionJob":
        """These settings alone (a new object sharing the nested sections; drops an InversionConfig's
        algorithm keys)."""
        return _project(self, InversionJob)


@dataclass
class InversionConfig(InversionJob, InversionAlgorithm):
    """The `inversion:` section: the job's and the algorithm's keys side by side (users write one
    flat section); `.algorithm` and `.job` give the two halves (see the module doc)."""

    # Every job key, and the algorithm's own: what the resume guard ignores.
    RUN_ONLY = InversionAlgorithm.RUN_ONLY + tuple(f.name for f in fields(InversionJob))

    def validate(self) -> None:
        InversionAlgorithm.validate(self)
        InversionJob.validate(self)
