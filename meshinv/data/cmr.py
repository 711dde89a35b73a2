"""The CMR annotation caches (.mat files) that CUB and PASCAL3D+ share, and a dataset over them.

CMR (Kanazawa et al. 2018) ships one MATLAB file per split with a struct array `images`, and one
SfM file per split with a struct array `sfm_anno`, index-aligned with `images`:

    images(i).rel_path   image path relative to the image folder ('/' or '\\' separated)
    images(i).bbox       struct x1, y1, x2, y2: the object's box, 1-based, inclusive
    images(i).mask       (H, W) logical foreground mask of the whole image
    images(i).parts      (3, K) keypoints: rows x, y (1-based pixels), visible (0/1)
    (CUB adds id, train, test, width, height, class_id; PASCAL3D+ adds cad_index, voc_image_id,
    voc_rec_id, is_train, width, height)

    sfm_anno(i).scale    scalar
    sfm_anno(i).trans    (2,) translation, in the pixel frame of `parts`
    sfm_anno(i).rot      (3, 3) rotation
    S                    (3, K) the SfM mean shape of the keypoints (object frame)
    conv_tri             (F, 3) its convex hull, 1-based

The SfM camera maps an object point v to the image as s * (rot v)[:2] + trans; it was fitted to
`parts` as stored, so trans shares their frame.

Pixel conventions. CMR's numbers are MATLAB pixel indices: pixel (row i, column j) of a 0-based
array has its centre at (j + 1, i + 1). Our continuous coordinates (meshinv.data.sample) put that
centre at (j + 0.5, i + 0.5), so on reading:

    keypoints, SfM translation:  x - 0.5                (a centre stays a centre)
    boxes:                       (x1 - 1, y1 - 1, x2, y2)  (inclusive pixel indices -> edges)

The original loaders subtract 1 from boxes and keypoints but not from the SfM translation, and then
normalise with 2 x / W - 1 (pixel centres at integers): their cameras sit half a pixel of the
original image away from ours. Ours agree with the keypoints and the mask.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional, Sequence

import numpy as np
import scipy.io
import torch

from ..geometry.camera import matrix_to_quaternion
from ..utils.images import read_image
from .info import DatasetInfo
from .preprocess import CropConfig, crop_sample, crop_square, resize_square
from .sample import DataError, PixelCamera, Sample, safe_image_id

log = logging.getLogger(__name__)

IMAGE_FIELDS = ("rel_path", "bbox", "mask", "parts")
SFM_FIELDS = ("scale", "trans", "rot")


# -- reading MATLAB structs ----------------------------------------------------------------------------

def load_mat(path: str | os.PathLike, variables: Sequence[str], what: str = "") -> dict:
    """Read a .mat file (structs as attribute objects, singleton dimensions squeezed) and check that
    it holds `variables`. Errors name the file and, through `what`, what it is for."""
    path = Path(path)
    suffix = f" ({what})" if what else ""
    if not path.is_file():
        raise DataError(f"{path}: file not found{suffix}")
    try:
        data = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=True)
    except (OSError, ValueError, TypeError, NotImplementedError) as e:
        raise DataError(f"{path}: cannot read as a MATLAB file{suffix} ({e})") from None
    missing = [v for v in variables if v not in data]
    if missing:
        present = sorted(k for k in data if not k.startswith("__"))
        raise DataError(f"{path}: no variable {', '.join(missing)}{suffix}; it holds {', '.join(present) or 'nothing'}")
    return data


def struct_list(value, path: Path, variable: str) -> list:
    """A struct array as a list of structs (squeeze_me turns a one-element array into the struct)."""
    if isinstance(value, np.ndarray):
        items = list(value.ravel())
    else:
        items = [value]
    if not all(hasattr(item, "_fieldnames") for item in items):
        raise DataError(f"{path}: `{variable}` is not a struct array")
    return items


def check_fields(records: list, fields: Sequence[str], path: Path, variable: str) -> None:
    """Every struct has every field (MATLAB struct arrays share their fields, but be sure)."""
    for index, record in enumerate(records):
        missing = [f for f in fields if f not in record._fieldnames]
        if missing:
            raise DataError(f"{path}: {variable}({index + 1}) has no field {', '.join(missing)} "
                            f"(fields: {', '.join(record._fieldnames)})")


def _number(value, where: str) -> float:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: expected a number, got {type(value).__name__}") from None
    if array.size != 1 or not np.isfinite(array).all():
        raise DataError(f"{where}: expected one finite number, got shape {array.shape}")
    return float(array.reshape(()))


def _array(value, shape: tuple, where: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: expected a numeric array of shape {shape}, got {type(value).__name__}") from None
    if array.size == int(np.prod(shape)) and array.shape != shape:
        array = array.reshape(shape)  # squeeze_me and MATLAB's row/column vectors
    if array.shape != shape:
        raise DataError(f"{where}: expected shape {shape}, got {array.shape}")
    if not np.isfinite(array).all():
        raise DataError(f"{where}: holds NaN or infinite values")
    return array


def as_text(value, where: str) -> str:
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    if not isinstance(value, str):
        raise DataError(f"{where}: expected a string, got {type(value).__name__}")
    return value


# -- one annotation ----------------------------------------------------------------------------------

@dataclass
class CmrAnnotation:
    """One `images` entry in our conventions: bbox (x0, y0, x1, y1) continuous pixels (x1, y1
    exclusive); mask (H, W) float32 in {0, 1}; keypoints (K, 3) continuous pixel x, y and
    visibility (invisible rows are zero)."""

    rel_path: str
    bbox: tuple[float, float, float, float]
    mask: np.ndarray
    keypoints: np.ndarray


def parse_annotation(record, where: str) -> CmrAnnotation:
    rel_path = as_text(record.rel_path, f"{where}.rel_path").replace("\\", "/")  # P3D files use backslashes
    box = record.bbox
    if not all(hasattr(box, k) for k in ("x1", "y1", "x2", "y2")):
        raise DataError(f"{where}.bbox: expected a struct with fields x1, y1, x2, y2")
    x1, y1, x2, y2 = (_number(getattr(box, k), f"{where}.bbox.{k}") for k in ("x1", "y1", "x2", "y2"))
    if x2 < x1 or y2 < y1:
        raise DataError(f"{where}.bbox: x2 < x1 or y2 < y1 ({x1}, {y1}, {x2}, {y2})")
    mask = np.asarray(record.mask)
    if mask.ndim != 2 or mask.dtype.kind not in "biuf":
        raise DataError(f"{where}.mask: expected an (H, W) logical array, got {mask.dtype} of shape {mask.shape}")
    parts = np.asarray(record.parts, dtype=np.float64)
    if parts.ndim != 2 or parts.shape[0] != 3:
        raise DataError(f"{where}.parts: expected a (3, K) array (x, y, visible), got shape {parts.shape}")
    keypoints = parts.T.copy()
    visible = keypoints[:, 2] > 0
    keypoints[visible, :2] -= 0.5  # 1-based pixel centres -> continuous coordinates
    keypoints[~visible] = 0.0
    keypoints[:, 2] = visible
    return CmrAnnotation(rel_path, (x1 - 1.0, y1 - 1.0, x2, y2), (mask > 0).astype(np.float32), keypoints)


def parse_sfm_camera(record, where: str) -> PixelCamera:
    """An `sfm_anno` entry -> PixelCamera of the full image (continuous pixel coordinates)."""
    scale = _number(record.scale, f"{where}.scale")
    if scale <= 0:
        raise DataError(f"{where}.scale: {scale} is not positive")
    trans = _array(record.trans, (2,), f"{where}.trans")
    rot = _array(record.rot, (3, 3), f"{where}.rot")
    if abs(np.linalg.det(rot) - 1.0) > 1e-3 or not np.allclose(rot @ rot.T, np.eye(3), atol=1e-3):
        raise DataError(f"{where}.rot: not a rotation matrix (det {np.linalg.det(rot):.4f})")
    quaternion = matrix_to_quaternion(torch.from_numpy(rot))
    return PixelCamera(scale, (float(trans[0]) - 0.5, float(trans[1]) - 0.5), tuple(float(q) for q in quaternion))


def keypoints_to_crop_ndc(keypoints: np.ndarray, box: tuple[int, int, int], size: int, mirror: bool = False,
                          permutation: Optional[np.ndarray] = None) -> torch.Tensor:
    """(K, 3) continuous pixel keypoints of the full image -> (K, 3) NDC of the crop (x right, y up,
    what WeakPerspectiveCamera.project returns) with visibility; invisible rows stay zero.

    Mirroring negates x and swaps left and right: keypoint k of the mirrored image is keypoint
    permutation[k] of the original."""
    left, top, side = box
    factor = size / side
    x = 2 * (keypoints[:, 0] - left) * factor / size - 1
    y = 1 - 2 * (keypoints[:, 1] - top) * factor / size
    visible = keypoints[:, 2] > 0
    out = np.stack([x, y, visible.astype(np.float64)], axis=1) * visible[:, None]
    if mirror:
        if permutation is None:
            raise DataError("mirroring keypoints needs the left/right keypoint permutation")
        out[:, 0] = -out[:, 0]
        out = out[permutation]
    return torch.from_numpy(out.astype(np.float32))


def load_predicted_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A predicted foreground mask saved with np.save: (H, W) (or with a singleton channel), any
    numeric type; > 0.5 is foreground. Never unpickles."""
    if not path.is_file():
        raise DataError(f"{path}: predicted mask not found")
    try:
        mask = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise DataError(f"{path}: not a plain numeric .npy array ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read predicted mask ({e})") from None
    mask = np.squeeze(np.asarray(mask))
    if mask.dtype.kind not in "biuf" or mask.shape != tuple(shape):
        raise DataError(f"{path}: predicted mask is {mask.dtype} of shape {mask.shape}, its image is {tuple(shape)}")
    return (mask > 0.5).astype(np.float32)


# -- the dataset -------------------------------------------------------------------------------------

class CmrDataset(torch.utils.data.Dataset):
    """Samples from one split of a CMR annotation cache (subclasses: CUBDataset, P3DDataset).

    Items are Samples cropped as CMR crops (meshinv.data.preprocess.crop_sample) with the SfM camera
    in the crop's NDC and gt["keypoints"] (K, 3) in the crop's NDC (see keypoints_to_crop_ndc).
    `mirror` mirrors every sample (camera mirrored, keypoints swapped left/right).
    """

    keypoint_permutation: Optional[np.ndarray] = None
    KIND_INFO: ClassVar[DatasetInfo]   # what every dataset of the subclass's kind offers
    class_names: tuple[str, ...] = ()  # by class id, where the files name the classes

    @property
    def info(self) -> DatasetInfo:
        return dataclasses.replace(self.KIND_INFO, class_names=tuple(self.class_names))

    def __init__(self, image_dir: Path, annotation_path: Path, sfm_path: Path, crop: Optional[CropConfig] = None,
                 mirror: bool = False, seed: Optional[int] = None):
        self.image_dir = Path(image_dir)
        self.annotation_path = Path(annotation_path)
        self.sfm_path = Path(sfm_path)
        self.crop = crop or CropConfig()
        self.mirror = mirror
        self.rng = np.random.default_rng(seed)  # only used when crop.jitter > 0
        if not self.image_dir.is_dir():
            raise DataError(f"{self.image_dir}: image folder not found")
        annotations = load_mat(self.annotation_path, ["images"], "CMR image annotations")
        self.records = struct_list(annotations["images"], self.annotation_path, "images")
        check_fields(self.records, IMAGE_FIELDS, self.annotation_path, "images")
        sfm = load_mat(self.sfm_path, ["sfm_anno"], "CMR SfM cameras")
        self.sfm_records = struct_list(sfm["sfm_anno"], self.sfm_path, "sfm_anno")
        check_fields(self.sfm_records, SFM_FIELDS, self.sfm_path, "sfm_anno")
        if len(self.sfm_records) != len(self.records):
            raise DataError(f"{self.sfm_path}: {len(self.sfm_records)} SfM cameras but {self.annotation_path} "
                            f"has {len(self.records)} images; they must be index-aligned")
        self.mean_shape, self.mean_shape_faces = _mean_shape(sfm, self.sfm_path)
        self.rel_paths = [as_text(r.rel_path, f"{self.annotation_path}: images({i + 1}).rel_path").replace("\\", "/")
                          for i, r in enumerate(self.records)]
        self.indices = list(range(len(self.records)))  # dataset index -> record index (subsets filter it)
        self._finish_index()

    # Subclasses may override these (a subclass that filters `indices` calls _finish_index again).
    def _image_id(self, record_index: int) -> str:
        return Path(self.rel_paths[record_index]).stem

    def _class_id(self, record_index: int) -> int:
        return -1

    def _mask(self, record_index: int, annotation: CmrAnnotation) -> np.ndarray:
        return annotation.mask

    def _extra_gt(self, record_index: int) -> dict:
        return {}

    def _finish_index(self) -> None:
        """Set the image ids once `indices` is final: safe folder names (safe_image_id); duplicate ids
        get the record index appended."""
        ids = [safe_image_id(self._image_id(i)) for i in self.indices]
        seen: dict[str, int] = {}
        for i in ids:
            seen[i] = seen.get(i, 0) + 1
        duplicates = {i for i, n in seen.items() if n > 1}
        if duplicates:
            log.warning("%s: %d image ids occur more than once; appending the record index to them",
                        self.annotation_path, len(duplicates))
            ids = [f"{i}_{r}" if i in duplicates else i for i, r in zip(ids, self.indices)]
        self._ids = ids

    def __len__(self) -> int:
        return len(self.indices)

    def image_ids(self) -> list[str]:
        return list(self._ids)

    def image_path(self, index: int) -> Path:
        return self.image_dir / self.rel_paths[self.indices[index]]

    def missing_images(self) -> list[Path]:
        """Image files the split names that are not on disk."""
        return [self.image_path(i) for i in range(len(self)) if not self.image_path(i).is_file()]

    def sfm_camera(self, index: int) -> PixelCamera:
        """The SfM camera of the full image (continuous pixel coordinates)."""
        record_index = self.indices[index]
        return parse_sfm_camera(self.sfm_records[record_index], f"{self.sfm_path}: sfm_anno({record_index + 1})")

    def annotation(self, index: int) -> CmrAnnotation:
        record_index = self.indices[index]
        return parse_annotation(self.records[record_index], f"{self.annotation_path}: images({record_index + 1})")

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < len(self):
            raise IndexError(index)
        record_index = self.indices[index]
        annotation = self.annotation(index)
        camera = self.sfm_camera(index)
        path = self.image_dir / annotation.rel_path
        image = read_image(path)
        if annotation.mask.shape != image.shape[:2]:
            raise DataError(f"{self.annotation_path}: images({record_index + 1}).mask is {annotation.mask.shape} "
                            f"but {path} is {image.shape[:2]}")
        mask = self._mask(record_index, annotation)
        if self.mirror and self.keypoint_permutation is None:
            raise DataError(f"{self.annotation_path}: mirroring needs the keypoint permutation")
        image_t, mask_t, camera_t, box = crop_sample(image, mask, annotation.bbox, camera, self.crop, rng=self.rng,
                                                     mirror=self.mirror, name=str(path))
        gt = {"keypoints": keypoints_to_crop_ndc(annotation.keypoints, box, self.crop.img_size, self.mirror,
                                                 self.keypoint_permutation)}
        if mask is not annotation.mask:
            # A replacement mask (e.g. predicted) is the target; keep the annotated one for evaluation.
            gt["annotated_mask"] = self._crop_mask(annotation.mask, box)
        gt.update(self._extra_gt(record_index))
        return Sample(image_t, mask_t, camera_t, self._class_id(record_index), self._ids[index], str(path), gt)

    def _crop_mask(self, mask: np.ndarray, box: tuple[int, int, int]) -> torch.Tensor:
        left, top, side = box
        resized = resize_square(crop_square(mask, left, top, side, 0.0), self.crop.img_size)
        out = torch.from_numpy((resized > self.crop.mask_threshold).astype(np.float32))[None]
        return out.flip(-1) if self.mirror else out


def _mean_shape(sfm: dict, path: Path) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """The SfM mean shape S (3, K) as (K, 3) points and its hull (0-based faces), if the file has them."""
    if "S" not in sfm:
        return None, None
    shape = np.asarray(sfm["S"], dtype=np.float64)
    if shape.ndim != 2 or shape.shape[0] != 3:
        raise DataError(f"{path}: S should be (3, K), got {shape.shape}")
    faces = None
    if "conv_tri" in sfm:
        tri = np.asarray(sfm["conv_tri"])
        if tri.ndim == 2 and tri.shape[1] == 3:
            faces = torch.from_numpy(tri.astype(np.int64) - 1)
    return torch.from_numpy(shape.T.astype(np.float32)), faces
