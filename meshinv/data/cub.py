"""CUB-200-2011 birds as CMR, ConvMesh and MeshInversion use them (docs/method.md section 9).

    ROOT/CUB_200_2011/images/<class folder>/<name>.jpg
                      images.txt                  "<image id> <rel_path>"
                      image_class_labels.txt      "<image id> <class>", 1-based (class_id = class - 1)
                      train_test_split.txt        "<image id> <1 train | 0 test>" (checked, not needed)
                      bounding_boxes.txt          "<image id> <x> <y> <w> <h>" (checked, not needed:
                                                  the cache's boxes are the ones CMR crops with)
    ROOT/cache/data/<split>_cub_cleaned.mat       CMR's `images` struct array (meshinv.data.cmr)
    ROOT/cache/sfm/anno_<split>.mat               CMR's `sfm_anno` struct array, S, conv_tri
    ROOT/predicted_mask/<index>.npy               optional: PointRend masks of the original release,
                                                  one per index of the test split's annotations
    ROOT/cache/cmr_pred_cam.pth                   optional: CMR's camera predictions per image stem

ConvMesh's layout (data/ and sfm/ directly under ROOT) is accepted as well. Splits: train, and
CMR's testval divided into val and test (the paper evaluates on test).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .camera_predictions import PREDICTIONS_FILE
from .cmr import CmrAnnotation, CmrDataset, load_predicted_mask
from .info import DatasetInfo
from .preprocess import CropConfig
from .sample import DataError

log = logging.getLogger(__name__)

CUB_SPLITS = ("train", "val", "test", "testval")
CUB_KEYPOINT_NAMES = ("back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing",
                      "nape", "right eye", "right leg", "right wing", "tail", "throat")
# Keypoint k of a mirrored bird is keypoint CUB_KEYPOINT_PERMUTATION[k] of the original (left <-> right).
CUB_KEYPOINT_PERMUTATION = np.array([1, 2, 3, 4, 5, 6, 11, 12, 13, 10, 7, 8, 9, 14, 15]) - 1


@dataclass(frozen=True)
class CubPaths:
    root: Path
    cub_dir: Path        # CUB_200_2011/
    cache_dir: Path      # holds data/ and sfm/

    @property
    def image_dir(self) -> Path:
        return self.cub_dir / "images"

    def annotation(self, split: str) -> Path:
        return self.cache_dir / "data" / f"{split}_cub_cleaned.mat"

    def sfm(self, split: str) -> Path:
        return self.cache_dir / "sfm" / f"anno_{split}.mat"

    @property
    def predicted_mask_dir(self) -> Path:
        return self.root / "predicted_mask"

    @property
    def predicted_cameras(self) -> Path:
        return self.root / "cache" / PREDICTIONS_FILE


def cub_paths(root: str | os.PathLike) -> CubPaths:
    """Where each part of a CUB root lives: MeshInversion's cache/ layout, else ConvMesh's."""
    root = Path(root)
    cache = root / "cache"
    if not (cache / "data").is_dir() and (root / "data").is_dir():
        cache = root
    return CubPaths(root, root / "CUB_200_2011", cache)


def read_id_table(path: Path, columns: int, numeric: bool = False) -> dict[str, list[str]]:
    """A CUB text table "<image id> <value> ..." -> {image id: values}; errors name file and line.
    numeric: every value after the id must be a finite number (bounding_boxes.txt, class labels)."""
    table = {}
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != columns:
            raise DataError(f"{path}:{number}: expected {columns} fields, got {len(fields)}: {line!r}")
        if numeric:
            for value in fields[1:]:
                try:
                    finite = math.isfinite(float(value))
                except ValueError:
                    finite = False
                if not finite:
                    raise DataError(f"{path}:{number}: {value!r} is not a finite number: {line!r}")
        table[fields[0]] = fields[1:]
    return table


def read_cub_class_labels(cub_dir: str | os.PathLike) -> dict[str, int]:
    """{image path relative to images/: 0-based class id} from images.txt and image_class_labels.txt."""
    cub_dir = Path(cub_dir)
    images = read_id_table(cub_dir / "images.txt", 2)
    labels = read_id_table(cub_dir / "image_class_labels.txt", 2)
    out = {}
    for image_id, (rel_path,) in images.items():
        if image_id not in labels:
            raise DataError(f"{cub_dir / 'image_class_labels.txt'}: no class for image {image_id} ({rel_path})")
        try:
            out[rel_path] = int(labels[image_id][0]) - 1
        except ValueError:
            raise DataError(f"{cub_dir / 'image_class_labels.txt'}: class of image {image_id} "
                            "is not an integer") from None
    return out


def cub_class_names(labels: dict[str, int]) -> tuple[str, ...]:
    """Class names by 0-based id from the class folders of read_cub_class_labels' image paths
    ("001.Black_footed_Albatross/x.jpg" -> "Black_footed_Albatross"); empty unless the ids are
    0..K-1 and each names one folder."""
    folders: dict[int, set] = {}
    for rel_path, class_id in labels.items():
        folders.setdefault(class_id, set()).add(rel_path.split("/")[0] if "/" in rel_path else "")
    if sorted(folders) != list(range(len(folders))) or any(len(f) != 1 or "" in f for f in folders.values()):
        return ()
    return tuple(next(iter(folders[k])).split(".", 1)[-1] for k in range(len(folders)))


class CUBDataset(CmrDataset):
    """One split of CUB as preprocessed Samples (see meshinv.data.cmr for the cameras and keypoints).

    class_id comes from image_class_labels.txt (0-based); without the CUB text files, from the
    annotations' own class_id field (1-based there) if present, else -1. image_id is the file stem
    (the key of cmr_pred_cam.pth). With use_predicted_mask, the mask is the predicted one
    (predicted_mask/<index>.npy, index into this split's annotations, as the original) and
    gt["annotated_mask"] keeps the annotated one.
    """

    keypoint_permutation = CUB_KEYPOINT_PERMUTATION
    KIND_INFO = DatasetInfo("cub", has_cameras=True, has_3d_ground_truth=False, has_cad_models=False)

    def __init__(self, root: str | os.PathLike, crop: Optional[CropConfig] = None, split: str = "test",
                 mirror: bool = False, use_predicted_mask: bool = False,
                 predicted_mask_dir: Optional[str | os.PathLike] = None, seed: Optional[int] = None):
        if split not in CUB_SPLITS:
            raise DataError(f"CUB has no split {split!r} (splits: {', '.join(CUB_SPLITS)})")
        self.paths = cub_paths(root)
        self.split = split
        super().__init__(self.paths.image_dir, self.paths.annotation(split), self.paths.sfm(split), crop, mirror, seed)
        self.predicted_mask_dir = None
        if use_predicted_mask:
            self.predicted_mask_dir = Path(predicted_mask_dir) if predicted_mask_dir else self.paths.predicted_mask_dir
            if not self.predicted_mask_dir.is_dir():
                raise DataError(f"{self.predicted_mask_dir}: predicted-mask folder not found (use_predicted_mask)")
        self.class_ids = self._read_classes()
        log.info("CUB %s: %d images from %s", split, len(self), self.paths.annotation(split))

    def _read_classes(self) -> list[int]:
        cub_dir = self.paths.cub_dir
        if (cub_dir / "images.txt").is_file() and (cub_dir / "image_class_labels.txt").is_file():
            labels = read_cub_class_labels(cub_dir)
            self.class_names = cub_class_names(labels)
            unknown = [p for p in self.rel_paths if p not in labels]
            if unknown:
                raise DataError(f"{cub_dir / 'images.txt'}: {len(unknown)} images of {self.annotation_path} are not "
                                f"listed (e.g. {unknown[0]}); is this the CUB_200_2011 release?")
            return [labels[p] for p in self.rel_paths]
        if all("class_id" in r._fieldnames for r in self.records):
            log.warning("%s: no images.txt / image_class_labels.txt; using the annotations' class_id", cub_dir)
            return [int(np.asarray(r.class_id).reshape(())) - 1 for r in self.records]
        log.warning("%s: no class labels (images.txt, image_class_labels.txt); class_id = -1", cub_dir)
        return [-1] * len(self.records)

    def _class_id(self, record_index: int) -> int:
        return self.class_ids[record_index]

    def _mask(self, record_index: int, annotation: CmrAnnotation) -> np.ndarray:
        if self.predicted_mask_dir is None:
            return annotation.mask
        return load_predicted_mask(self.predicted_mask_dir / f"{record_index}.npy", annotation.mask.shape)
