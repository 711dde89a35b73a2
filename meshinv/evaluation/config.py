"""The evaluation section of an experiment config (SPEC section 8)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..data.preprocess import CropConfig


def _evaluation_crop() -> CropConfig:
    # Must match the inversion's crop (meshinv/inversion/config.py), whose target masks are binarised
    # at 0.95 after resizing; img_size is replaced by each record's image_size.
    return CropConfig(img_size=256, padding=0.05, jitter=0.0, mask_threshold=0.95)


@dataclass
class EvaluationConfig:
    """scripts/evaluate.py: score an inversion results folder (meshinv/inversion/results.py)."""

    results_dir: str = "outputs/inversion"   # the inversion's out_dir; metrics.json etc. are written here
    data_dir: Optional[str] = None           # the dataset split that was inverted; None = result folders only
    metrics: list[str] = field(default_factory=lambda: ["mask_iou", "full_mask_iou", "novel_view_iou", "chamfer_3d"])
    crop: CropConfig = field(default_factory=_evaluation_crop)
    limit: Optional[int] = None              # only the first N result folders (sorted by image id)
    # Novel views (novel_view_iou): about the canonical pose, centred, untranslated (SPEC 8).
    novel_view_size: int = 256
    novel_view_scale: float = 0.7
    azimuths: list[float] = field(default_factory=lambda: [30.0 * k for k in range(12)])
    # report_grid.png: one row per image for the first grid_rows evaluated images.
    grid_rows: int = 8
    grid_image_size: int = 128
    grid_azimuths: list[float] = field(default_factory=lambda: [0.0, 90.0, 180.0, 270.0])
    worst_count: int = 5                     # images listed in report.md as the worst by mask IoU
