"""Reading the embedded default dataset (procedural birds with full 3D ground truth), which
meshinv.datagen.synthetic generates.

On disk, per split, the folder format of meshinv.data.folder plus ground truth:

    <out_dir>/<split>/images/<id>.png        the photo
                      masks/<id>.png         visible foreground (occluders removed)
                      annotations.json       class_id, camera (pixel convention), bbox (full object)
                      gt/<id>.npz            class_id, camera_ndc (7,) of the full image, vertices
                                             (V, 3) object space, deformation_map (3, 32, 32),
                                             full_mask (H, W) bool, occluded (bool), bbox
                      gt/<id>_texture.png    the texture map that made it (T x T)
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..utils.images import read_image
from .folder import FolderDataset
from .info import DatasetInfo
from .preprocess import CropConfig, crop_square, resize_square
from .sample import DataError, Sample


class SyntheticDataset(FolderDataset):
    """A written split as Samples whose `gt` holds the ground truth, cropped like the image:
    vertices (V, 3), deformation_map (3, 32, 32), texture (3, T, T) in [-1, 1], full_mask (1, S, S),
    camera_full (7,) camera of the uncropped image, occluded (scalar)."""

    KIND_INFO = DatasetInfo("synthetic", has_cameras=True, has_3d_ground_truth=True, has_cad_models=False)

    def __init__(self, root, crop: Optional[CropConfig] = None, mirror: bool = False):
        super().__init__(root, crop, require_camera=True, require_class=True, mirror=mirror)

    def __getitem__(self, index: int) -> Sample:
        sample, box = self._load(index)
        stem = self.image_paths[index].stem
        gt_path = self.root / "gt" / f"{stem}.npz"
        try:
            with np.load(gt_path) as gt:
                arrays = {k: gt[k] for k in ("vertices", "deformation_map", "full_mask", "camera_ndc", "occluded")}
        except (OSError, KeyError, ValueError) as e:
            raise DataError(f"{gt_path}: cannot read the ground truth ({e})") from None
        texture = torch.from_numpy(read_texture(self.root / "gt" / f"{stem}_texture.png"))
        left, top, side = box
        full = resize_square(crop_square(arrays["full_mask"].astype(np.float32), left, top, side, 0.0), self.crop.img_size)
        full_mask = torch.from_numpy((full > self.crop.mask_threshold).astype(np.float32))[None]
        if self.mirror:
            full_mask = full_mask.flip(-1)  # the object is symmetric: vertices and maps do not change
        sample.gt = {
            "vertices": torch.from_numpy(arrays["vertices"]).float(),
            "deformation_map": torch.from_numpy(arrays["deformation_map"]).float(),
            "texture": texture, "full_mask": full_mask,
            "camera_full": torch.from_numpy(arrays["camera_ndc"]).float(),
            "occluded": torch.tensor(bool(arrays["occluded"])),
        }
        return sample


def read_texture(path: Path) -> np.ndarray:
    """(3, T, T) float32 in [-1, 1] from a texture PNG."""
    return read_image(path).transpose(2, 0, 1) * 2 - 1
