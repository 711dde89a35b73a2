"""What a dataset folder holds, and pictures to check its cameras (scripts/check_dataset.py).

inspect_dataset(kind, root) lists every file a kind uses as ok / missing / malformed / incomplete
(a split whose image files are partly missing, named), optional files that are not there as absent,
with counts per split. Its header says OK only when no line is flagged [!!]. sample_overlays draws samples with the outline of their
mask (yellow), their annotated keypoints (green) and the camera's projection of the dataset's
reference points (red): the SfM mean shape for CUB and PASCAL3D+, the ground-truth vertices for
the synthetic data.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..geometry.camera import WeakPerspectiveCamera
from ..utils.config import at_least, require
from .camera_predictions import load_cmr_predicted_cameras
from .cub import CUB_SPLITS, CUBDataset, cub_paths, read_id_table
from .datasets import DATASET_KINDS, dataset_kind, kind_info, split_folder
from .folder import IMAGE_SUFFIXES, FolderDataset
from .p3d import P3D_SPLITS, P3DDataset, load_cad_models, p3d_paths, read_keypoint_permutation, read_p3d_labels
from .preprocess import CropConfig
from .sample import DataError, Sample

log = logging.getLogger(__name__)


@dataclass
class CheckDatasetConfig:
    """scripts/check_dataset.py: which dataset to check and what to draw."""

    dataset: str = ""                 # a kind of meshinv.data.datasets: cub | p3d | synthetic | folder
    root: str = ""                    # the dataset folder
    split: Optional[str] = None       # split to draw samples from (None: the kind's default)
    out: Optional[str] = None         # PNG of the drawn samples (none if null)
    samples: int = 6
    image_size: int = 192
    use_predicted_mask: bool = False  # cub: draw with predicted_mask/ instead of the annotated masks

    def validate(self) -> None:
        require(self.dataset in DATASET_KINDS, "dataset", f"must be one of {', '.join(DATASET_KINDS)} (--dataset), "
                f"got {self.dataset!r}")
        require(bool(self.root), "root", "must name the dataset folder (--root)")
        at_least(self, 0, "samples")
        at_least(self, 1, "image_size")


@dataclass
class Check:
    """One expected file or folder. status: ok | missing | malformed | incomplete (a split with image
    files missing) | absent (optional, not there)."""

    what: str
    path: str
    status: str
    detail: str = ""
    required: bool = True

    @property
    def problem(self) -> bool:
        """Something is wrong with it (flagged [!!]), required or not."""
        return self.status not in ("ok", "absent")

    @property
    def failed(self) -> bool:
        return self.required and self.status != "ok"


@dataclass
class DatasetReport:
    kind: str
    root: str
    checks: list[Check] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)   # split -> number of samples

    @property
    def ok(self) -> bool:
        """Every required file is there and well formed (optional ones may still have problems)."""
        return not any(c.failed for c in self.checks)

    def verdict(self) -> str:
        optional = sum(c.problem and not c.required for c in self.checks)
        if not self.ok:
            return "PROBLEMS"
        return f"usable, but {optional} optional item(s) have PROBLEMS" if optional else "OK"

    def add(self, what: str, path: Path, status: str, detail: str = "", required: bool = True) -> None:
        if status == "missing" and not required:
            status = "absent"
        self.checks.append(Check(what, str(path), status, detail, required))

    def text(self) -> str:
        lines = [f"{self.kind} dataset at {self.root}: {self.verdict()}"]
        for c in self.checks:
            flag = {"ok": "ok", "absent": "--"}.get(c.status, "!!")
            note = "" if c.required else " (optional)"
            lines.append(f"  [{flag}] {c.what}{note}: {c.status}{' - ' + c.detail if c.detail else ''}")
        if self.counts:
            lines.append("  samples per split: " + ", ".join(f"{k} {v}" for k, v in self.counts.items()))
        return "\n".join(lines)


def _check_file(report: DatasetReport, what: str, path: Path, reader=None, required: bool = True) -> None:
    """Record a file as missing, malformed (reader raised DataError) or ok (reader's detail)."""
    if not path.exists():
        report.add(what, path, "missing", required=required)
        return
    try:
        detail = reader(path) if reader else ""
    except DataError as e:
        report.add(what, path, "malformed", str(e), required)
        return
    report.add(what, path, "ok", detail or "", required)


def _count_entries(path: Path, columns: int, numeric: bool = False) -> str:
    return f"{len(read_id_table(path, columns, numeric))} entries"


# Image files listed by name in a report line, before "and N more".
MISSING_FILES_SHOWN = 5


def _check_split(report: DatasetReport, name: str, files: tuple[Path, ...], open_split, required: bool):
    """Open one split (its annotation files are `files`); record its count and how many of its image
    files are missing. Returns the dataset, or None."""
    absent = [p for p in files if not p.is_file()]
    if absent:
        report.add(f"split {name}", absent[0], "missing", ", ".join(str(p) for p in absent) + " not found", required)
        return None
    try:
        dataset = open_split()
    except DataError as e:
        report.add(f"split {name}", files[0], "malformed", str(e), required)
        return None
    missing = dataset.missing_images()
    report.counts[name] = len(dataset)
    detail = f"{len(dataset)} samples"
    if missing:
        shown = ", ".join(str(p) for p in missing[:MISSING_FILES_SHOWN])
        more = f" and {len(missing) - MISSING_FILES_SHOWN} more" if len(missing) > MISSING_FILES_SHOWN else ""
        detail += f", {len(missing)} image files missing: {shown}{more}"
    report.add(f"split {name}", files[0], "incomplete" if missing else "ok", detail, required)
    return dataset


def inspect_cub(root: str | os.PathLike) -> DatasetReport:
    paths = cub_paths(root)
    report = DatasetReport("cub", str(root))
    cub = paths.cub_dir
    report.add("CUB_200_2011/images/", paths.image_dir, "ok" if paths.image_dir.is_dir() else "missing")
    _check_file(report, "images.txt", cub / "images.txt", lambda p: _count_entries(p, 2))
    _check_file(report, "image_class_labels.txt", cub / "image_class_labels.txt", lambda p: _count_entries(p, 2, True))
    _check_file(report, "train_test_split.txt", cub / "train_test_split.txt", lambda p: _count_entries(p, 2, True),
                False)
    _check_file(report, "bounding_boxes.txt", cub / "bounding_boxes.txt", lambda p: _count_entries(p, 5, True), False)
    crop = CropConfig(img_size=64)
    for split in CUB_SPLITS:
        _check_split(report, split, (paths.annotation(split), paths.sfm(split)),
                     lambda s=split: CUBDataset(root, crop, split=s), required=split == "test")
    folder = paths.predicted_mask_dir
    report.add("predicted_mask/", folder, "ok" if folder.is_dir() else "missing",
               f"{len(list(folder.glob('*.npy')))} .npy files" if folder.is_dir() else "", required=False)
    _check_file(report, "cache/cmr_pred_cam.pth", paths.predicted_cameras,
                lambda p: f"{len(load_cmr_predicted_cameras(p))} predictions", required=False)
    return report


def inspect_p3d(root: str | os.PathLike) -> DatasetReport:
    paths = p3d_paths(root)
    report = DatasetReport("p3d", str(root))
    report.add("PASCAL3D+_release1.1/Images/", paths.image_dir, "ok" if paths.image_dir.is_dir() else "missing")
    _check_file(report, "CAD/car.mat", paths.cad, lambda p: f"{len(load_cad_models(p))} CAD models")
    _check_file(report, "data/car_kps.mat", paths.keypoints,
                lambda p: f"{len(read_keypoint_permutation(p)[0])} keypoints", required=False)
    _check_file(report, "p3d_labels.csv", paths.labels, lambda p: f"{len(read_p3d_labels(p)[0])} labelled images",
                required=False)
    crop = CropConfig(img_size=64)
    for split in P3D_SPLITS:
        dataset = _check_split(report, split, (paths.annotation(split), paths.sfm(split)),
                               lambda s=split: P3DDataset(root, crop, split=s), required=split == "val")
        if dataset is not None:
            for subset in ("imagenet", "pascal"):
                prefix = f"{paths.category}_{subset}/"
                report.counts[f"{split}/{subset}"] = sum(p.startswith(prefix) for p in dataset.rel_paths)
    return report


def inspect_folder(root: str | os.PathLike, kind: str = "folder", split: Optional[str] = None) -> DatasetReport:
    """The files of a kind read from a split folder (synthetic, folder): what the kind offers
    (kind_info) says which are required: annotations when it promises cameras, gt/ when it
    promises 3D ground truth."""
    root = Path(root)
    offers = kind_info(kind)
    split = split or dataset_kind(kind).default_split
    folder = split_folder(root, split, "images") or root
    report = DatasetReport(kind, str(folder))
    images = folder / "images"
    if not images.is_dir():
        report.add("images/", images, "missing")
        return report
    stems = {p.stem for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    report.add("images/", images, "ok" if stems else "malformed", f"{len(stems)} images")
    masks = folder / "masks"
    have = {p.stem for p in masks.glob("*.png")} if masks.is_dir() else set()
    report.add("masks/", masks, "ok" if stems <= have else ("missing" if not have else "malformed"),
               f"{len(stems & have)} of {len(stems)} images have a mask")

    def read_json(path: Path) -> str:
        try:
            return f"{len(json.loads(path.read_text()))} entries"
        except (json.JSONDecodeError, TypeError) as e:
            raise DataError(f"not valid JSON ({e})") from None

    _check_file(report, "annotations.json", folder / "annotations.json", read_json, required=offers.has_cameras)
    if report.checks[-1].status == "ok":
        _check_annotations(report, folder, offers.has_cameras)
    if offers.has_3d_ground_truth:
        gt = {p.stem for p in (folder / "gt").glob("*.npz")}
        report.add("gt/", folder / "gt", "ok" if stems <= gt else "malformed", f"{len(stems & gt)} of {len(stems)}")
    report.counts[split if folder != root else folder.name] = len(stems)
    return report


def _check_annotations(report: DatasetReport, folder: Path, required: bool) -> None:
    """Every image's entry in annotations.json, checked as reading the image would check it."""
    try:
        dataset = FolderDataset(folder, require_camera=required, require_class=required)
    except DataError as e:
        report.add("annotations of each image", folder / "annotations.json", "malformed", str(e), required)
        return
    errors = []
    for path in dataset.image_paths:
        try:
            dataset.annotation(path.stem)
        except DataError as e:
            errors.append(str(e))
    detail = f"{len(dataset) - len(errors)} of {len(dataset)} images well annotated"
    if errors:
        detail += f"; first error: {errors[0]}"
    report.add("annotations of each image", dataset.annotation_path, "malformed" if errors else "ok", detail, required)


# The kinds whose readers find their split's files themselves, each with its own file list.
_SPLIT_READER_CHECKS = {"cub": inspect_cub, "p3d": inspect_p3d}


def inspect_dataset(kind: str, root: str | os.PathLike, split: Optional[str] = None) -> DatasetReport:
    """The report of `kind` (a registered kind, meshinv.data.datasets.KINDS; a DataError for any other)."""
    if not dataset_kind(kind).takes_split:
        return inspect_folder(root, kind, split)
    if kind not in _SPLIT_READER_CHECKS:
        raise DataError(f"no file checks for dataset kind {kind!r}")
    return _SPLIT_READER_CHECKS[kind](root)


# -- pictures ---------------------------------------------------------------------------------------

def reference_points(dataset, sample: Sample) -> Optional[torch.Tensor]:
    """(N, 3) object-space points to project with a sample's camera, if the dataset has any."""
    if "vertices" in sample.gt:
        return sample.gt["vertices"]
    return getattr(dataset, "mean_shape", None)


def _ndc_to_pixels(xy: torch.Tensor, size: int) -> np.ndarray:
    """(N, 2) NDC (x right, y up) -> (N, 2) continuous pixel (x, y) of an S x S image."""
    return np.stack([(xy[:, 0].numpy() + 1) * size / 2, (1 - xy[:, 1].numpy()) * size / 2], axis=1)


def overlay(sample: Sample, points: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(3, S, S) in [-1, 1]: the sample with its mask outline, keypoints and projected points."""
    from PIL import Image, ImageDraw

    size = sample.image.shape[-1]
    image = ((sample.image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy().copy()
    mask = sample.mask[0].numpy() > 0.5
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    image[mask & ~inner] = (255, 220, 0)
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    if points is not None and sample.camera is not None:
        with torch.no_grad():
            xy = WeakPerspectiveCamera.from_tensor(sample.camera[None]).project(points[None].float())[0]
        dense = len(xy) > 100  # a mesh rather than a few keypoints: single pixels keep the image visible
        for x, y in _ndc_to_pixels(xy, size):
            if dense:
                draw.point((x, y), fill=(230, 30, 30))
            else:
                draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=(230, 30, 30))
    keypoints = sample.gt.get("keypoints")
    if keypoints is not None:
        visible = keypoints[:, 2] > 0
        for x, y in _ndc_to_pixels(keypoints[visible, :2], size):
            draw.rectangle([x - 2, y - 2, x + 2, y + 2], outline=(30, 220, 30))
    return torch.from_numpy(np.array(canvas)).permute(2, 0, 1).float() / 127.5 - 1


def sample_overlays(dataset, count: int) -> tuple[list[torch.Tensor], dict[str, str]]:
    """Overlays of `count` samples spread over the dataset, and {image id: error} of those that failed."""
    if len(dataset) == 0 or count <= 0:
        return [], {}
    indices = sorted(set(np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int).tolist()))
    ids = dataset.image_ids()
    tiles, failures = [], {}
    for index in indices:
        try:
            sample = dataset[index]
        except DataError as e:
            failures[ids[index]] = str(e)
            continue
        tiles.append(overlay(sample, reference_points(dataset, sample)))
    return tiles, failures
