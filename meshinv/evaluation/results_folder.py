"""Reading an inversion results folder (meshinv/inversion/results.py describes what it holds): its
image folders, the images the inversion failed on, and one image's record with the input and target
mask it was fitted to."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ..inversion.output import SUMMARY_FILE
from ..inversion.results import RESULT_FILE, InversionRecord, load_record
from ..utils.images import read_image_tensor, read_mask

log = logging.getLogger(__name__)

# Files an inversion writes per image besides result.pt; any of them marks an image folder.
RESULT_IMAGE_FILES = ("input.png", "target_mask.png", "render.png", "pred_mask.png")


def find_result_ids(results_dir: str | os.PathLike) -> list[str]:
    """Sorted ids of the image folders in a results folder (with or without a result.pt)."""
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder not found: {root}")
    names = (RESULT_FILE,) + RESULT_IMAGE_FILES
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and any((p / n).is_file() for n in names))


def inversion_summary(results_dir: str | os.PathLike) -> dict:
    """The inversion's summary.json; {} when there is none or it cannot be read (e.g. results written
    by the library call), with a warning in the second case."""
    path = Path(results_dir) / SUMMARY_FILE
    if not path.is_file():
        return {}
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        summary = None
        log.warning("%s: cannot read the inversion's summary (%s); its failed images and left-out loss terms are "
                    "not reported", path, e)
    return summary if isinstance(summary, dict) else {}


def summary_records(summary: dict, key: str) -> dict[str, str]:
    """A {name: why} record of the inversion's summary, e.g. `left_out` (loss terms left out) or
    `random_weights` (terms computed with random weights); {} when it has none."""
    records = summary.get(key)
    return {str(k): str(v) for k, v in records.items()} if isinstance(records, dict) else {}


def inversion_failures(results_dir: str | os.PathLike, summary: Optional[dict] = None) -> dict[str, str]:
    """{image id: reason} for the images that the inversion's summary.json records as failed and that
    have no result; {} when there is no readable summary (e.g. results written by the library call).
    summary: that summary when the caller has read it."""
    images = (inversion_summary(results_dir) if summary is None else summary).get("images")
    if not isinstance(images, dict):
        return {}
    return {str(image_id): str(entry.get("reason", "")) for image_id, entry in sorted(images.items())
            if isinstance(entry, dict) and entry.get("status") == "failed"
            and not (Path(results_dir) / str(image_id) / RESULT_FILE).is_file()}


@dataclass
class ResultImage:
    """One image folder: its record and, where the folder has them, the cropped input the inversion
    saw (input.png, (3, S, S) in [-1, 1]) and the mask it fitted (target_mask.png, (1, S, S))."""

    record: InversionRecord
    input_image: Optional[torch.Tensor]
    target_mask: Optional[torch.Tensor]


def read_result(folder: Path) -> ResultImage:
    """The record and images of one image folder. FileNotFoundError without a result.pt; ValueError
    (a DataError for an image) naming the file that cannot be read."""
    record = load_record(folder)
    input_path, target_path = folder / "input.png", folder / "target_mask.png"
    image = read_image_tensor(input_path) if input_path.is_file() else None
    target = torch.from_numpy(read_mask(target_path))[None] if target_path.is_file() else None
    return ResultImage(record, image, target)
