"""The inversion section of an experiment config (docs/method.md sections 6 and 7; defaults are the paper's).

Two halves, one flat YAML section (`inversion:`):
    InversionAlgorithm  what decides an image's result: crop, z search, schedule, losses, seed,
                        starting camera. The engine (Inverter) sees only this.
    InversionJob        which images, from where, into which folder, what is exported and logged,
                        how many are optimised together. Changing it never changes a result.
InversionConfig has the fields of both; `.algorithm` and `.job` give each half. The resume guard
(meshinv/inversion/output.py) compares the algorithm and ignores the settings a class lists in
`RUN_ONLY`: every job key (derived from InversionJob's fields), and the algorithm's keys that change
how much is computed at once, or which pairs a Chamfer search visits, not what (results agree up to
float rounding).

Each class's `validate()` checks its own settings and its parts' with the shared helpers
(meshinv/utils/config.py), naming keys relative to itself; `validate_inversion` checks a section on
its own (the engine, scripts/invert.py) and names them as the experiment config does
("inversion.select_num must be >= 1, got 0").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Literal, Optional, TypeVar

from ..data.camera_predictions import TRUSTED_OVERLAY_IOU
from ..data.preprocess import CropConfig
from ..render.settings import RenderSettings
from ..utils.config import SettingError, at_least, check, non_empty, require, validate_config, within

T = TypeVar("T")

SECTION = "inversion"  # where these settings sit in an experiment config
SHIPPED_PRIOR = "pretrained/synthetic_prior_ours.pt"  # the default generator checkpoint (sampling, too)


def default_inversion_crop() -> CropConfig:
    """The inversion's default crop (evaluation falls back on it too). The original binarises the
    resized target mask at 0.95."""
    return CropConfig(img_size=256, padding=0.05, jitter=0.0, mask_threshold=0.95)


def _finite_at_least_zero(value: float) -> bool:
    return math.isfinite(value) and value >= 0


def _validate_parts(cfg, *names: str) -> None:
    """The own checks of the nested sections `names`, named from `cfg`, so that a direct validate()
    covers the whole section (validate_config walks them as well)."""
    for name in names:
        try:
            getattr(cfg, name).validate()
        except SettingError as err:
            raise err.within(name) from None


def validate_inversion(cfg) -> None:
    """Check an inversion section on its own, naming every key from the experiment config
    ("inversion.loss.mask_weight ..."): its own checks first (the more specific messages), then
    the ones every setting gets (validate_config: enumerations, finite numbers)."""
    try:
        cfg.validate()
    except SettingError as err:
        raise err.within(SECTION) from None
    validate_config(cfg, SECTION)


@dataclass
class InversionLossConfig:
    """Weights and parameters of the inversion objective (a weight of 0 turns a term off)."""

    mask_weight: float = 10.0        # the mask term (mask_loss)
    pixel_weight: float = 1.0        # the pixel-level texture term (texture_loss)
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
    chunk_size: Optional[int] = None  # pairs per tile of the nearest-neighbour search (None: the device's default)
    # From 3072 target pixels on (chamfer.PRUNE_MIN_REFERENCES; not at the default 96 px), the pixel
    # term's search skips pairs that a spatial bound shows cannot be nearest, and so decides by the
    # exact pair cost: against the unpruned search (by tile cost) only near-tie choices can change, by
    # float rounding. Below that, and with False, the search is the same either way.
    chamfer_pruning: bool = True
    vgg_weights: Optional[str] = None      # default: vgg19-dcbb9e9d.pth from the pretrained folders, else fetched
    # With feature_weight > 0 and the VGG-19 weights neither on this machine nor fetchable: "error"
    # stops the run before any work; "skip" leaves the feature term out, logged loudly and recorded
    # in summary.json (`left_out`) and report.md; "random" computes it with random VGG weights
    # (tests and smoke runs only: the term is then meaningless; recorded as `random_weights`).
    on_missing_vgg: Literal["error", "skip", "random"] = "error"
    # The paper's loss ablation (docs/method.md section 7); the paper's loss is chamfer / chamfer.
    # texture_loss, the pixel-level texture term: "chamfer" (the pixel-level Chamfer texture loss),
    # "l1" (mean |rendering - input| over the target mask), "contextual" (Mechrez et al. 2018 on the
    # foreground colours, with contextual_bandwidth h and contextual_eps).
    texture_loss: Literal["chamfer", "l1", "contextual"] = "chamfer"
    # mask_loss: "chamfer" (projected vertices vs. mask pixels) or "raster" (1 - soft IoU of the
    # renderer's soft silhouette and the mask).
    mask_loss: Literal["chamfer", "raster"] = "chamfer"
    contextual_bandwidth: float = 0.5
    contextual_eps: float = 1e-5

    RUN_ONLY = ("chunk_size", "chamfer_pruning")  # how the searches run, not what they find

    def validate(self) -> None:
        weights = [f.name for f in fields(self) if isinstance(getattr(self, f.name), float)]
        check(self, weights, _finite_at_least_zero, "a finite number >= 0")
        at_least(self, 1, "subsample_points", "chunk_size")
        check(self, ("contextual_bandwidth", "contextual_eps"), lambda v: math.isfinite(v) and v > 0,
              "a finite number > 0")


@dataclass
class CameraSearchConfig:
    """The camera search (meshinv/inversion/camera_search.py): hypotheses over the view sphere fitted
    to the mask, the best kept with their depth mirrors and scored with z candidates under the full
    loss. With a start camera (predictor, predictions, dataset), the start competes with them."""

    enabled: bool = False
    views: int = 24                  # viewing directions (Fibonacci sphere)
    rolls: int = 4                   # in-plane turns per direction
    mask_size: int = 32              # the mask is matched at this resolution
    vertices: int = 128              # ... by this many of the mean shape's vertices
    steps: int = 30                  # Adam steps on the Chamfer mask loss per hypothesis
    lr: float = 0.05
    keep: int = 2                    # distinct rotations kept per image, each with its depth mirror
    distinct_deg: float = 30.0       # kept rotations are at least this far apart
    score_candidates: int = 16       # z candidates each kept camera is scored with (the z search's first)

    def validate(self) -> None:
        at_least(self, 1, "views", "rolls", "keep", "score_candidates", "vertices")
        at_least(self, 4, "mask_size")
        at_least(self, 0, "steps")
        check(self, ("lr", "distinct_deg"), _finite_at_least_zero, "a finite number >= 0")


@dataclass
class CameraInitConfig:
    """Where the starting camera of each image comes from, in order of preference:
    a camera-predictor checkpoint, a predictions file (the original's cmr_pred_cam.pth format),
    then the dataset's own camera (SfM pose, or the synthetic ground truth), optionally perturbed.
    With `search.enabled`, a camera searched from the image alone competes with that start (or
    stands alone where there is none)."""

    predictor: Optional[str] = None      # camera-predictor checkpoint (scripts/train_camera.py)
    # Average the predictor's camera with the one it gives for the mirrored crop, mirrored back.
    mirror_average: bool = False
    predictions: Optional[str] = None    # {image stem: {pred_cam: (7,), pred_pose_overlay_iou: float}}
    min_prediction_iou: float = TRUSTED_OVERLAY_IOU   # predictions whose overlay IoU is not above this are ignored
    # Perturbation of the dataset camera (to emulate a predicted one on synthetic data): a rotation by
    # exactly this angle about a random axis, a shift of this fraction of the image side in a random
    # direction, and a scale change by this fraction, up or down at random.
    noise_rotation_deg: float = 0.0
    noise_translation: float = 0.0
    noise_scale: float = 0.0
    # False: the dataset's own cameras are never a start (on synthetic data they are the ground
    # truth), so an image without a predictor's camera needs the search.
    use_dataset_camera: bool = True
    # From the image alone: searched over the view sphere for every image (a start camera from the
    # sources above competes with the searched ones and is kept only when it scores best).
    search: CameraSearchConfig = field(default_factory=CameraSearchConfig)

    def validate(self) -> None:
        check(self, ("min_prediction_iou", "noise_rotation_deg", "noise_translation", "noise_scale"),
              _finite_at_least_zero, "a finite number >= 0")
        _validate_parts(self, "search")
        require(self.noise_scale < 1, "noise_scale",
                f"must be < 1 (a scale change of that fraction), got {self.noise_scale!r}")


@dataclass
class ExportConfig:
    """What is written per image besides result.pt."""

    mesh: bool = True                  # mesh.obj + mesh.mtl + mesh.png
    turntable_frames: int = 24         # 0 = no turntable.gif
    turntable_size: int = 128
    turntable_ms_per_frame: int = 80

    def validate(self) -> None:
        at_least(self, 0, "turntable_frames")
        at_least(self, 1, "turntable_size", "turntable_ms_per_frame")

    @property
    def turntable_render_settings(self) -> RenderSettings:
        return RenderSettings(self.turntable_size)


@dataclass
class RefineConfig:
    """The optional refinement after the inversion (meshinv/inversion/refine.py, docs/method.md
    section 6): past the prior where the image gives evidence, the prior's output elsewhere. Off
    unless `texture` or `shape` is on; the other keys are their knobs."""

    texture: bool = False            # project the input onto the seen texels and blend it with the generated texture
    shape: bool = False              # a residual on the deformation map, fitted to the mask (camera fixed)
    # shape: Adam steps on mask_weight * Chamfer mask + smoothness_weight * smoothness
    # + closeness_weight * mean squared vertex move from the inverted mesh
    steps: int = 50
    lr: float = 0.01
    mask_weight: float = 10.0
    smoothness_weight: float = 1.0e-3
    closeness_weight: float = 10.0
    # texture: a texel takes image colour where its point on the mesh is visible (within
    # depth_tolerance NDC of the nearest surface), faces the camera (normal z > min_facing) and lands
    # on the target mask eroded by mask_erode px; its weight grows from 0 at min_facing to 1 at
    # full_facing, and ramps up over `feather` texels from the seen region's border (UV space).
    min_facing: float = 0.2
    full_facing: float = 0.9
    depth_tolerance: float = 0.02
    mask_erode: int = 2
    feather: int = 8
    # Symmetric templates: a seen texel's colour also goes to its mirror texel (the other side of
    # the object) where that is seen less squarely.
    mirror: bool = True
    # The largest blend weight: image colour and generated colour mixed where a texel is seen best.
    # Below 1 a colour the camera or mesh put on a slightly wrong texel counts less: at 1 the UV
    # error against the true texture went up, at 0.5 down (bench/RESULTS.md, "Refinement").
    texture_strength: float = 0.5

    @property
    def enabled(self) -> bool:
        return self.texture or self.shape

    def validate(self) -> None:
        at_least(self, 0, "steps", "mask_erode")
        at_least(self, 1, "feather")
        check(self, ("lr", "mask_weight", "smoothness_weight", "closeness_weight", "depth_tolerance"),
              _finite_at_least_zero, "a finite number >= 0")
        within(self, -1, 1, "min_facing", "full_facing")  # cosines
        within(self, 0, 1, "texture_strength")
        require(self.full_facing > self.min_facing, "full_facing",
                f"must be above min_facing ({self.min_facing}), got {self.full_facing}")


def _project(config, cls: type[T]) -> T:
    return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})


@dataclass
class InversionAlgorithm:
    """What decides an image's result (the engine's whole configuration)."""

    crop: CropConfig = field(default_factory=default_inversion_crop)   # img_size is the working resolution
    seed: int = 1234                         # with the image id, seeds each image's z candidates
    select_num: int = 500                    # random z scored to pick the start
    # 0 scores every candidate under the full loss (the paper's selection). K > 0 scores every
    # candidate under a cheap loss first (at select_prescore_size px, without the VGG term) and
    # re-scores each image's best K under the full loss: the same choice whenever the full loss's
    # best candidate is among the cheap loss's best K.
    select_shortlist: int = 0
    select_prescore_size: Optional[int] = None   # None: half of crop.img_size, rounded down to a multiple of 4
    init_batch_size: int = 100               # candidates scored per forward pass (all images together)
    # Every image of a class scores the same generated candidates: they are kept across batches
    # within this many MiB (the most recently used classes; 0 keeps none).
    select_cache_mb: int = 1024
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
    refine: RefineConfig = field(default_factory=RefineConfig)   # off by default

    RUN_ONLY = ("init_batch_size", "select_cache_mb", "recompute_target_features")  # how much is computed at once, not what

    def validate(self) -> None:
        """Raise SettingError naming the first key that no run could use."""
        size = self.crop.img_size
        require(size >= 4 and size % 4 == 0, "crop.img_size",
                f"must be a positive multiple of 4 (VGG cells), got {size}")
        at_least(self, 1, "select_num", "init_batch_size", "iterations")
        at_least(self, 0, "select_shortlist", "select_cache_mb")
        if self.select_prescore_size is not None:
            require(4 <= self.select_prescore_size <= size and self.select_prescore_size % 4 == 0,
                    "select_prescore_size",
                    f"must be a multiple of 4 between 4 and crop.img_size ({size}), got {self.select_prescore_size}")
        at_least(self, 0, "warm_up")
        require(len(self.iterations) > 0, "iterations", "must list at least one stage, got []")
        stages = len(self.iterations)
        for name in ("z_lrs", "camera_lrs"):
            count = len(getattr(self, name))
            require(count == stages, name, f"must have one entry per stage of iterations ({stages}), got {count}")
        check(self, ("z_lrs", "camera_lrs"), lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
        check(self, ("betas",), lambda v: 0 <= v < 1, "in [0, 1)")
        _validate_parts(self, "crop", "loss", "camera_init", "refine")

    @property
    def render_settings(self) -> RenderSettings:
        """The objective renders at the working resolution."""
        return RenderSettings(self.crop.img_size)

    @property
    def prescore_size(self) -> int:
        """The resolution of the shortlist's cheap pass."""
        return self.select_prescore_size or max(4, self.crop.img_size // 8 * 4)

    @property
    def algorithm(self) -> "InversionAlgorithm":
        """These settings alone (a new object sharing the nested sections; drops an InversionConfig's
        job keys)."""
        return _project(self, InversionAlgorithm)


@dataclass
class InversionJob:
    """Which images are inverted, from where, into which folder, and what is written besides the
    results (scripts/invert.py). None of it changes an image's result."""

    checkpoint: str = SHIPPED_PRIOR
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
        """Raise SettingError naming the first key that no run could use."""
        check(self, ("limit",), lambda v: v >= 0, ">= 0 or null")
        at_least(self, 1, "batch_size")
        non_empty(self, "checkpoint", "out_dir")
        require(bool(self.images or self.data), "data", "must not be empty when images is not set")
        _validate_parts(self, "export")

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
