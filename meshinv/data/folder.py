"""The on-disk folder format that any user can produce for their own photos.

    ROOT/
      images/<stem>.jpg|.jpeg|.png   any size; grayscale and RGBA are converted to RGB
      masks/<stem>.png               optional: foreground mask, same size as the image (nonzero = object)
      annotations.json               optional: {"<stem>": {"class_id": 3,
                                                 "camera": {"scale": s, "translation": [tx, ty],
                                                            "quaternion": [w, x, y, z]},
                                                 "bbox": [x0, y0, x1, y1]}, ...}

Cameras and boxes are in continuous pixel coordinates of the original image (meshinv.data.sample).
Every field of an annotation is optional unless the dataset is asked to require it.
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
from PIL import Image, UnidentifiedImageError

from .preprocess import CropConfig, crop_sample
from .sample import DataError, PixelCamera, Sample

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1]; grayscale and RGBA become RGB."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: cannot read image ({e})") from None


def read_mask(path: str | os.PathLike, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) float32 in {0, 1} from any single- or multi-channel image; must match `shape`."""
    try:
        with Image.open(path) as image:
            mask = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: cannot read mask ({e})") from None
    if mask.shape != tuple(shape):
        raise DataError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is {shape[1]}x{shape[0]}")
    return (mask > 0.5).astype(np.float32)


@dataclass
class FolderDatasetConfig:
    root: str = "datasets/synthetic/test"
    crop: CropConfig = field(default_factory=CropConfig)
    require_camera: bool = False  # fail on images without an annotated camera
    require_class: bool = False   # fail on images without an annotated class id
    mirror: bool = False          # mirror every sample (training augmentation mirrors at random)


class FolderDataset(torch.utils.data.Dataset):
    """Images (+ masks, + annotations) in the folder format above, as preprocessed Samples."""

    def __init__(self, root: str | os.PathLike, crop: Optional[CropConfig] = None, require_camera: bool = False,
                 require_class: bool = False, mirror: bool = False, mask_dirs: Optional[list] = None):
        self.root = Path(root)
        # Searched after ROOT/masks, e.g. a cache of automatic masks (meshinv.data.segment.cached_mask).
        self.mask_dirs = [self.root / "masks"] + [Path(d) for d in (mask_dirs or [])]
        image_dir = self.root / "images"
        if not image_dir.is_dir():
            # A plain folder of photos works too (no masks/ or annotations then, unless beside them).
            if self.root.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in self.root.iterdir()):
                image_dir = self.root
            else:
                raise DataError(f"{self.root}: no images/ folder and no images in it "
                                "(see meshinv/data/folder.py for the format)")
        self.image_dir = image_dir
        self.image_paths = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        stems = [p.stem for p in self.image_paths]
        if len(set(stems)) != len(stems):
            raise DataError(f"{image_dir}: two images share a file stem; stems are the image ids")
        self.annotations: dict = {}
        annotation_path = self.root / "annotations.json"
        if annotation_path.is_file():
            try:
                self.annotations = json.loads(annotation_path.read_text())
            except json.JSONDecodeError as e:
                raise DataError(f"{annotation_path}: not valid JSON ({e})") from None
        self.crop = crop or CropConfig()
        self.require_camera = require_camera
        self.require_class = require_class
        self.mirror = mirror
        log.info("%s: %d images, %d annotations", self.root, len(self.image_paths), len(self.annotations))

    @classmethod
    def from_config(cls, cfg: FolderDatasetConfig) -> "FolderDataset":
        return cls(cfg.root, cfg.crop, cfg.require_camera, cfg.require_class, cfg.mirror)

    def __len__(self) -> int:
        return len(self.image_paths)

    def image_ids(self) -> list[str]:
        return [p.stem for p in self.image_paths]

    def _annotation(self, stem: str, key: str, required: bool):
        value = self.annotations.get(stem, {}).get(key)
        if value is None and required:
            raise DataError(f"{self.root / 'annotations.json'}: image {stem!r} has no {key!r}")
        return value

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
        raise DataError(f"{self.image_dir / stem}: no mask at {looked} (automatic masks: "
                        "scripts/invert.py --images DIR, or inversion.auto_masks=true)")

    def _load(self, index: int) -> tuple[Sample, tuple[int, int, int]]:
        """The preprocessed sample and its crop box (left, top, side) in the original image."""
        path = self.image_paths[index]
        stem = path.stem
        image = read_image(path)
        mask_path = self.mask_path(stem)
        mask = read_mask(mask_path, image.shape[:2])
        if not mask.any():
            raise DataError(f"{mask_path}: the mask is empty (no foreground pixel)")
        camera_data = self._annotation(stem, "camera", self.require_camera)
        camera = PixelCamera.from_dict(camera_data, f"{self.root / 'annotations.json'}[{stem}].camera") if camera_data else None
        class_id = self._annotation(stem, "class_id", self.require_class)
        bbox = self._annotation(stem, "bbox", False)
        image_t, mask_t, camera_t, box = crop_sample(image, mask, bbox, camera, self.crop, mirror=self.mirror,
                                                     name=str(mask_path))
        class_id = int(class_id) if class_id is not None else -1
        return Sample(image_t, mask_t, camera_t, class_id, stem, str(path)), box
