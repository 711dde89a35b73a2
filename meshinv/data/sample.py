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

from dataclasses import dataclass, field
from typing import Optional

import torch


class DataError(ValueError):
    """Bad input data; the message names the offending file or field."""


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
        try:
            scale = float(data["scale"])
            translation = tuple(float(t) for t in data["translation"])
            quaternion = tuple(float(q) for q in data["quaternion"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{where}: expected scale, translation [tx, ty] and quaternion [w, x, y, z] ({e})") from None
        if len(translation) != 2 or len(quaternion) != 4:
            raise DataError(f"{where}: translation needs 2 numbers and quaternion 4")
        return cls(scale, translation, quaternion)


@dataclass
class Sample:
    """One preprocessed image.

    image     (3, S, S) in [-1, 1]
    mask      (1, S, S) in {0, 1} (the visible foreground)
    camera    (7,) [s, tx, ty, qw, qx, qy, qz] in the NDC of this crop, or None if unknown
    class_id  int, -1 if unknown
    image_id  str, unique within its dataset (the file stem)
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
