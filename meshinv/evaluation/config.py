"""The evaluation section of an experiment config (docs/method.md section 8)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from ..data.preprocess import CropConfig
from ..inversion.config import default_inversion_crop
from ..render.views import NOVEL_VIEW_SCALE
from ..utils.config import at_least, greater_than, within


@dataclass
class FIDConfig:
    """FID_1, FID_10 and FID_12 (meshinv/evaluation/fid/)."""

    # "fid": the TF-ported FID Inception (pytorch-fid's pt_inception-2015-12-05-6726825d.pth), as
    # docs/method.md section 8 says. "torchvision": torchvision's ImageNet Inception v3, which is what the original code
    # actually runs (lib/utils/inception.py) and what its released statistics file was made with.
    network: Literal["fid", "torchvision"] = "fid"
    weights: Optional[str] = None            # file name or path; None = the network's standard file
    allow_random_weights: bool = False       # tests only: a seeded random network if the file is missing
    # Real-image statistics for FID_10 / FID_12: an .npz (ours, or the original's
    # precomputed_fid_299x299_testval.npz), or None = computed from reference_data and cached.
    reference_stats: Optional[str] = None
    reference_data: Optional[str] = None     # None = evaluation.data_dir
    reference_split: Optional[str] = None    # None = testval for CUB (the original's file), else the default
    reference_background: float = 0.5        # in [0, 1]; the original's statistics: 0 in [-1, 1], i.e. grey
    stats_cache_dir: Optional[str] = None    # None = <reference dataset folder>/fid_stats
    image_size: int = 299                    # Inception input; reference crops are taken at this size
    render_size: int = 256                   # FID_10/12 views are rendered at this size (the original's)
    batch_size: int = 32

    def validate(self) -> None:
        within(self, 0, 1, "reference_background")
        at_least(self, 1, "image_size", "render_size", "batch_size")


@dataclass
class EvaluationConfig:
    """scripts/evaluate.py: score an inversion results folder (meshinv/inversion/results.py)."""

    results_dir: str = "outputs/inversion"   # the inversion's out_dir; metrics.json etc. are written here
    data_dir: Optional[str] = None           # the dataset that was inverted; None = result folders only
    split: Optional[str] = None              # None = the dataset kind's default (meshinv.data.datasets)
    metrics: list[str] = field(default_factory=lambda: ["mask_iou", "full_mask_iou", "novel_view_iou", "chamfer_3d",
                                                        "rotation_error_deg"])
    crop: CropConfig = field(default_factory=default_inversion_crop)  # where a result records none; img_size follows it
    limit: Optional[int] = None              # only the first N result folders (sorted by image id)
    # Novel views (novel_view_iou, FID_10, FID_12): about the canonical pose, centred, untranslated
    # (docs/method.md section 8; meshinv.render.views).
    novel_view_size: int = 256
    novel_view_scale: float = NOVEL_VIEW_SCALE
    azimuths: list[float] = field(default_factory=lambda: [30.0 * k for k in range(12)])
    fid: FIDConfig = field(default_factory=FIDConfig)
    # iou_3d, iou_3d_global (PASCAL3D+): voxel grid side. There is no frame rotation to set: the
    # predictions and the CAD models share the frame the dataset's cameras act on (voxels.py).
    voxel_resolution: int = 32
    # report_grid.png: one row per image for the first grid_rows evaluated images.
    grid_rows: int = 8
    grid_image_size: int = 128
    grid_azimuths: list[float] = field(default_factory=lambda: [0.0, 90.0, 180.0, 270.0])
    worst_count: int = 5                     # images listed in report.md as the worst by mask IoU

    def validate(self) -> None:
        # Metric names are checked by scripts/evaluate.py against the registry (which may grow at run time).
        at_least(self, 1, "limit", "novel_view_size", "voxel_resolution", "grid_image_size")
        at_least(self, 0, "grid_rows", "worst_count")
        greater_than(self, 0, "novel_view_scale")
