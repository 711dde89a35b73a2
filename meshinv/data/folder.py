"""The on-disk folder format that any user can produce for their own photos.

    ROOT/
      images/<stem>.jpg|.jpeg|.png   8- or 16-bit, up to meshinv.utils.images.MAX_IMAGE_PIXELS; grey and
                                     palette images become RGB, transparent pixels white
      masks/<stem>.png               optional: foreground mask, same size as the image (object where the
                                     grey value is above half the maximum, e.g. 255 of 8 bits)
      annotations.json               optional: {"<stem>": {"class_id": 3,
                                                 "camera": {"scale": s, "translation": [tx, ty],
                                                            "quaternion": [w, x, y, z]},
                                                 "bbox": [x0, y0, x1, y1]}, ...}

ROOT may also be a plain folder of photos (no images/ inside), with masks/ and annotations.json
optional beside them. Cameras and boxes are in continuous pixel coordinates of the original image
(meshinv.data.sample). Every field of an annotation is optional unless the dataset is asked to
require it; class_id is an integer >= 0, or -1 / null for unknown. The image id is the file stem,
or a safe rewrite of it when the stem is no safe folder name (meshinv.data.sample.safe_image_id).

Bad data of one image (unreadable file, missing or empty mask, a malformed, NaN or degenerate
annotation) is a DataError naming the file and the image, raised when that image is read, so that a
batch job records it and goes on. Only what concerns every image fails when the folder is opened: no
images, two images with one id, an annotations.json that is not a JSON object.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

import torch

from ..utils.images import read_image, read_mask  # noqa: F401 -- the readers, re-exported
from .info import DatasetInfo
from .preprocess import CropConfig, crop_sample
from .sample import DataError, PixelCamera, Sample, finite_numbers, parse_class_id, safe_image_id

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def holds_images(folder: Path) -> bool:
    """Whether `folder` directly holds image files (a plain folder of photos)."""
    return folder.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())


@dataclass
class FolderDatasetConfig:
    root: str = "datasets/synthetic/test"
    crop: CropConfig = field(default_factory=CropConfig)
    require_camera: bool = False  # fail on images without an annotated camera
    require_class: bool = False   # fail on images without an annotated class id
    mirror: bool = False          # mirror every sample (training augmentation mirrors at random)


class FolderDataset(torch.utils.data.Dataset):
    """Images (+ masks, + annotations) in the folder format above, as preprocessed Samples."""

    # What every dataset of this kind offers; `info` adds what this folder's annotations offer.
    KIND_INFO: ClassVar[DatasetInfo] = DatasetInfo("folder", has_cameras=False, has_3d_ground_truth=False,
                                                   has_cad_models=False)

    def __init__(self, root: str | os.PathLike, crop: Optional[CropConfig] = None, require_camera: bool = False,
                 require_class: bool = False, mirror: bool = False, mask_dirs: Optional[list] = None):
        self.root = Path(root)
        # Searched after ROOT/masks, e.g. a cache of automatic masks (meshinv.data.segment.cached_mask).
        self.mask_dirs = [self.root / "masks"] + [Path(d) for d in (mask_dirs or [])]
        # stem -> why no automatic mask can be made for it (filled by meshinv.data.segment.segment_missing).
        self.mask_unavailable: dict[str, str] = {}
        image_dir = self.root / "images"
        if not image_dir.is_dir():
            # A plain folder of photos works too (no masks/ or annotations then, unless beside them).
            if holds_images(self.root):
                image_dir = self.root
            else:
                raise DataError(f"{self.root}: no images/ folder and no images in it "
                                "(see meshinv/data/folder.py for the format)")
        self.image_dir = image_dir
        self.image_paths = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        stems = [p.stem for p in self.image_paths]
        if len(set(stems)) != len(stems):
            raise DataError(f"{image_dir}: two images share a file stem; stems are the image ids")
        # Ids name result folders: a stem that is no safe folder name (e.g. ".." of "...png") gets a safe one.
        self._ids = [safe_image_id(stem) for stem in stems]
        for path, image_id in zip(self.image_paths, self._ids):
            if image_id != path.stem:
                log.warning("%s: %r is not a safe folder name; its image id is %r", path, path.stem, image_id)
        if len(set(self._ids)) != len(self._ids):
            raise DataError(f"{image_dir}: two images have the same id after making their stems safe folder names")
        self.annotation_path = self.root / "annotations.json"
        self.annotations: dict = {}
        if self.annotation_path.is_file():
            try:
                self.annotations = json.loads(self.annotation_path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise DataError(f"{self.annotation_path}: not valid JSON ({e})") from None
            if not isinstance(self.annotations, dict):
                raise DataError(f"{self.annotation_path}: expected an object {{image stem: annotation}}, "
                                f"got a {type(self.annotations).__name__}")
        self.crop = crop or CropConfig()
        self.require_camera = require_camera
        self.require_class = require_class
        self.mirror = mirror
        log.info("%s: %d images, %d annotations", self.root, len(self.image_paths), len(self.annotations))

    @classmethod
    def from_config(cls, cfg: FolderDatasetConfig) -> "FolderDataset":
        return cls(cfg.root, cfg.crop, cfg.require_camera, cfg.require_class, cfg.mirror)

    @property
    def info(self) -> DatasetInfo:
        return dataclasses.replace(self.KIND_INFO, has_cameras=self.KIND_INFO.has_cameras or self._all_have_cameras())

    def _all_have_cameras(self) -> bool:
        """Every image has a camera in annotations.json (whether it is well formed is checked on reading)."""
        return all(isinstance(self.annotations.get(p.stem), dict) and self.annotations[p.stem].get("camera") is not None
                   for p in self.image_paths)

    def __len__(self) -> int:
        return len(self.image_paths)

    def image_ids(self) -> list[str]:
        """The file stems, made safe folder names where they are not (meshinv.data.sample.safe_image_id)."""
        return list(self._ids)

    def _annotation(self, stem: str, key: str, required: bool):
        entry = self.annotations.get(stem, {})
        if not isinstance(entry, dict):
            raise DataError(f"{self.annotation_path}[{stem!r}]: expected an object with class_id, camera, bbox, "
                            f"got {entry!r}")
        value = entry.get(key)
        if value is None and required:
            raise DataError(f"{self.annotation_path}: image {stem!r} has no {key!r}")
        return value

    def annotation(self, stem: str) -> tuple[Optional[PixelCamera], int, Optional[tuple[float, ...]]]:
        """The checked annotation of one image: (camera or None, class id, bbox (x0, y0, x1, y1) or None);
        a DataError naming annotations.json and the image for anything malformed, non-finite or degenerate."""
        where = f"{self.annotation_path}[{stem!r}]"
        camera_data = self._annotation(stem, "camera", self.require_camera)
        camera = PixelCamera.from_dict(camera_data, f"{where}.camera") if camera_data is not None else None
        class_id = parse_class_id(self._annotation(stem, "class_id", self.require_class), f"{where}.class_id")
        bbox = self._annotation(stem, "bbox", False)
        if bbox is not None:
            x0, y0, x1, y1 = bbox = finite_numbers(bbox, 4, f"{where}.bbox [x0, y0, x1, y1]")
            if x1 <= x0 or y1 <= y0:
                raise DataError(f"{where}.bbox: {list(bbox)} is empty or reversed (needs x0 < x1 and y0 < y1)")
        return camera, class_id, bbox

    def __getitem__(self, index: int) -> Sample:
        return self._load(index)[0]

    def mask_path(self, stem: str) -> Path:
        """The first `<stem>.png` in the mask folders; a DataError naming them when there is none."""
        for folder in self.mask_dirs:
            if (folder / f"{stem}.png").is_file():
                return folder / f"{stem}.png"
            if (folder / f"{stem}.none").is_file():  # the segmenter's record of finding nothing
                reason = (folder / f"{stem}.none").read_text().strip()
                raise DataError(f"{self.image_dir / stem}: no mask: {reason}")
        looked = ", ".join(str(folder / f"{stem}.png") for folder in self.mask_dirs)
        if stem in self.mask_unavailable:
            image = next((p for p in self.image_paths if p.stem == stem), self.image_dir / stem)
            raise DataError(f"{image}: no mask at {looked}, and {self.mask_unavailable[stem]}. "
                            f"Put a mask at {self.mask_dirs[0] / stem}.png, or make automatic masks possible")
        raise DataError(f"{self.image_dir / stem}: no mask at {looked} (automatic masks: "
                        "scripts/invert.py --images DIR, or inversion.auto_masks=true)")

    def _load(self, index: int) -> tuple[Sample, tuple[int, int, int]]:
        """The preprocessed sample and its crop box (left, top, side) in the original image."""
        path = self.image_paths[index]
        stem = path.stem
        camera, class_id, bbox = self.annotation(stem)  # before decoding: the cheap check first
        image = read_image(path)
        mask_path = self.mask_path(stem)
        mask = read_mask(mask_path, image.shape[:2])
        if not mask.any():
            raise DataError(f"{mask_path}: the mask is empty (no pixel above half the maximum value; "
                            "a 0/1 mask must be saved as 0/255)")
        image_t, mask_t, camera_t, box = crop_sample(image, mask, bbox, camera, self.crop, mirror=self.mirror,
                                                     name=str(mask_path))
        return Sample(image_t, mask_t, camera_t, class_id, self._ids[index], str(path)), box
