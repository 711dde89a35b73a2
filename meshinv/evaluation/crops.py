"""The crop each result was made with, so that ground-truth masks and images are cut and binarised
as the inversion's targets were: the record's own (InversionRecord.crop), else the run's config.yaml
(results written before records carried it), else evaluation.crop."""

from __future__ import annotations

import dataclasses
import logging
import os

from ..data.preprocess import CropConfig
from ..inversion.results import RESULT_FILE, InversionRecord, saved_run_config
from ..utils.config import from_dict

log = logging.getLogger(__name__)


def inversion_crop(results_dir: str | os.PathLike, crop: CropConfig) -> CropConfig:
    """`crop` with the padding and mask threshold the inversion used (read from the results'
    config.yaml), so that ground-truth masks are cut and binarised as its targets were; `crop`
    itself when the folder records none."""
    used = ((saved_run_config(results_dir) or {}).get("inversion") or {}).get("crop") or {}
    changes = {key: used[key] for key in ("padding", "mask_threshold") if key in used and used[key] != getattr(crop, key)}
    if changes:
        log.info("using the inversion's crop settings %s recorded in %s (evaluation.crop has %s)", changes,
                 results_dir, {key: getattr(crop, key) for key in changes})
    return dataclasses.replace(crop, **changes)


def record_crop(record: InversionRecord, fallback: CropConfig) -> CropConfig:
    """The crop `record` was made with: record.crop when it has one, else `fallback` (the folder's,
    inversion_crop) at the record's image_size. A recorded crop that is no CropConfig, or whose size
    is not the record's, is a ValueError naming the image."""
    size = int(record.image_size)
    if record.crop is None:
        return dataclasses.replace(fallback, img_size=size)
    crop = from_dict(CropConfig, record.crop, f"{record.image_id}/{RESULT_FILE}: crop")
    if crop.img_size != size:
        raise ValueError(f"{record.image_id}/{RESULT_FILE}: its crop is {crop.img_size} x {crop.img_size} but its "
                         f"image_size is {size}")
    return crop
