"""The one in-memory sample type that every dataset produces, and the pixel-space camera.

Pixel-space cameras (what annotation files store) use continuous pixel coordinates: x to the
right, y down, pixel (row i, column j) covers [j, j+1) x [i, i+1) and has its centre at
(j + 0.5, i + 0.5). A weak-perspective pixel camera projects an object point v to

    (x, y) = s * (R(q) v)_xy + (tx, ty)          (pixels)

and the matching NDC camera of an S x S image (the renderer's and the losses' convention) is
s_ndc = 2 s / S, t_ndc = 2 t / S - 1, exactly, because pixel centres map to (2j + 1)/S - 1.
CMR/ConvMesh annotation files use 1-based MATLAB pixel indices instead (the centre of 0-based
column j is at j + 1); meshinv.data.cmr converts them on reading (points and SfM translations
- 0.5, inclusive boxes (x1, y1, x2, y2) -> (x1 - 1, y1 - 1, x2, y2)).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Optional

import torch

from ..utils.errors import DataError  # noqa: F401 -- the data layer's error, re-exported here

UNKNOWN_CLASS = -1  # Sample.class_id of an image whose class is not known (the z search picks one)
MIN_QUATERNION_NORM = 1e-6


def finite_numbers(value, count: int, where: str) -> tuple[float, ...]:
    """`count` finite numbers from a JSON value (a number when count is 1, else a list); a DataError
    naming `where` for anything else."""
    values = [value] if count == 1 and not isinstance(value, (list, tuple)) else value
    if (not isinstance(values, (list, tuple)) or len(values) != count
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
        raise DataError(f"{where}: expected {'a number' if count == 1 else f'a list of {count} numbers'}, got {value!r}")
    if not all(math.isfinite(v) for v in values):
        raise DataError(f"{where}: {value!r} is not finite (NaN or infinite)")
    return tuple(float(v) for v in values)


@dataclass
class PixelCamera:
    """Weak-perspective camera in continuous pixel coordinates of one image (see module doc)."""

    scale: float
    translation: tuple[float, float]
    quaternion: tuple[float, float, float, float]  # (w, x, y, z)

    def to_dict(self) -> dict:
        return {"scale": float(self.scale), "translation": [float(t) for t in self.translation],
                "quaternion": [float(q) for q in self.quaternion]}

    @classmethod
    def from_dict(cls, data: dict, where: str = "camera") -> "PixelCamera":
        """From {"scale": s, "translation": [tx, ty], "quaternion": [w, x, y, z]}; refuses wrong
        types and lengths, NaN or infinite values, a scale <= 0 and a quaternion of (near) zero
        length, naming `where`. The quaternion is normalised."""
        if not isinstance(data, dict) or not {"scale", "translation", "quaternion"} <= set(data):
            raise DataError(f"{where}: expected {{scale, translation [tx, ty], quaternion [w, x, y, z]}}, got {data!r}")
        (scale,) = finite_numbers(data["scale"], 1, f"{where}.scale")
        translation = finite_numbers(data["translation"], 2, f"{where}.translation")
        quaternion = finite_numbers(data["quaternion"], 4, f"{where}.quaternion")
        if scale <= 0:
            raise DataError(f"{where}.scale: {scale} is not positive")
        norm = math.sqrt(sum(q * q for q in quaternion))
        # Rotations ignore a quaternion's length, but one of (almost) zero length has no direction.
        if norm < MIN_QUATERNION_NORM:
            raise DataError(f"{where}.quaternion: {list(quaternion)} has (almost) zero length, so it is no rotation")
        return cls(scale, translation, tuple(q / norm for q in quaternion))


def parse_class_id(value, where: str) -> int:
    """A class id from an annotation: an integer >= 0, or UNKNOWN_CLASS (-1) / None for unknown."""
    if value is None:
        return UNKNOWN_CLASS
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < UNKNOWN_CLASS:
        raise DataError(f"{where}: {value!r} is not a class id: expected an integer >= 0, "
                        f"or {UNKNOWN_CLASS} / null for unknown")
    return value


# Image ids name result folders (OUT/<image id>/) and cache files, so they must be one plain path component.
_UNSAFE_ID_CHARACTERS = re.compile(r"[/\\\x00-\x1f\x7f]")
MAX_IMAGE_ID_LENGTH = 200  # bytes; file systems allow 255 per name, and ids get suffixes (".png", ".none")


def _utf8_size(text: str) -> Optional[int]:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:  # undecodable bytes of a file name (surrogate escapes)
        return None


def is_safe_image_id(image_id: str) -> bool:
    """Whether `image_id` is usable as one folder name: not empty, no leading dot (".", "..",
    hidden names), no path separator or control character, valid UTF-8 of at most
    MAX_IMAGE_ID_LENGTH bytes."""
    if not isinstance(image_id, str) or not image_id or image_id.startswith("."):
        return False
    size = _utf8_size(image_id)
    return size is not None and size <= MAX_IMAGE_ID_LENGTH and not _UNSAFE_ID_CHARACTERS.search(image_id)


def safe_image_id(name: str) -> str:
    """The image id for a file stem or other name: the name itself when it is safe (is_safe_image_id),
    else a deterministic safe rewrite that stays distinct from every other name: unsafe characters and
    leading dots become "_", long names are cut, and a hash of the original is appended, e.g.
    ".." -> "__-<8 hex digits>"."""
    if is_safe_image_id(name):
        return name
    raw = name.encode("utf-8", errors="surrogateescape")
    cleaned = _UNSAFE_ID_CHARACTERS.sub("_", raw.decode("utf-8", errors="replace"))
    cleaned = "_" * (len(cleaned) - len(cleaned.lstrip("."))) + cleaned.lstrip(".")
    cleaned = cleaned.encode("utf-8")[:MAX_IMAGE_ID_LENGTH - 9].decode("utf-8", errors="ignore")
    return f"{cleaned}-{hashlib.sha1(raw).hexdigest()[:8]}"


def check_image_id(image_id: str, where: str = "image id") -> str:
    """`image_id` itself, or a DataError when it is not a safe folder name (see is_safe_image_id)."""
    if not is_safe_image_id(image_id):
        raise DataError(f"{where}: {image_id!r} is not a safe folder name (no leading dot, path separator or "
                        f"control character, at most {MAX_IMAGE_ID_LENGTH} bytes); "
                        "meshinv.data.sample.safe_image_id makes one")
    return image_id


@dataclass
class Sample:
    """One preprocessed image.

    image     (3, S, S) in [-1, 1]
    mask      (1, S, S) in {0, 1} (the visible foreground)
    camera    (7,) [s, tx, ty, qw, qx, qy, qz] in the NDC of this crop, or None if unknown
    class_id  int >= 0, or UNKNOWN_CLASS (-1)
    image_id  str, unique within its dataset, a safe folder name (the file stem, via safe_image_id)
    source    str, path of the original image file
    gt        optional ground truth (synthetic data): name -> tensor
    """

    image: torch.Tensor
    mask: torch.Tensor
    camera: Optional[torch.Tensor]
    class_id: int
    image_id: str
    source: str
    gt: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self):
        # The id names the result folder: refuse here what could escape it (see safe_image_id).
        check_image_id(self.image_id, f"{self.source}: image id")
