"""Pseudo-ground-truth UV maps for pretraining: the file format and its reader. The builder (as
ConvMesh builds them, docs/method.md sections 4 and 9) and the conversion of ConvMesh's released files are in
meshinv.datagen.pseudogt.

On disk, one pickle-free .npz per image under <split root>/pseudogt_<T>x<T>/<image id>.npz:

    texture        (3, T, T) float32 in [-1, 1], 0 where not visible
    texture_alpha  (1, T, T) float32 in {0, 1}
    mesh           (3, 32, 32) float32 deformation map
    image_256      (3, S, S) float32 in [-1, 1], the masked crop on black (-1) (the image branch's real)
    mask_256       (1, S, S) float32 in {0, 1}
    camera         (7,) float32 NDC camera of that crop
    class_id       int (-1 if unknown)
    image_id       str
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..geometry.camera import WeakPerspectiveCamera
from ..utils.io import save_npz
from .sample import DataError

PSEUDOGT_KEYS = ("texture", "texture_alpha", "mesh", "image_256", "mask_256", "camera", "class_id", "image_id")


def pseudogt_dirname(texture_size: int) -> str:
    return f"pseudogt_{texture_size}x{texture_size}"




# -- files --------------------------------------------------------------------------------------------

def save_pseudogt(path: str | os.PathLike, *, texture: torch.Tensor, texture_alpha: torch.Tensor, mesh: torch.Tensor,
                  image_256: torch.Tensor, mask_256: torch.Tensor, camera: Optional[torch.Tensor], class_id: int,
                  image_id: str) -> None:
    """Write one image's pseudo-GT (tensors without a batch dimension) in our .npz format."""
    def array(t: torch.Tensor) -> np.ndarray:
        return t.detach().float().cpu().numpy()

    save_npz(path, texture=array(texture), texture_alpha=array(texture_alpha), mesh=array(mesh),
             image_256=array(image_256), mask_256=array(mask_256),
             camera=array(camera) if camera is not None else np.full(7, np.nan, np.float32),
             class_id=np.int64(class_id), image_id=np.str_(image_id))


def load_pseudogt(path: str | os.PathLike) -> dict:
    """Read one pseudo-GT file (never unpickles) -> dict of tensors (+ class_id int, image_id str)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in PSEUDOGT_KEYS if k not in data.files]
            if missing:
                raise DataError(f"{path}: not a meshinv pseudo-GT file (missing {', '.join(missing)}); "
                                "ConvMesh's files must be converted first (scripts/build_pseudogt.py --convert-convmesh)")
            out = {k: torch.from_numpy(data[k]) for k in ("texture", "texture_alpha", "mesh", "image_256", "mask_256", "camera")}
            out["class_id"] = int(data["class_id"])
            out["image_id"] = str(data["image_id"])
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read pseudo-GT ({e})") from None
    if not all(torch.isfinite(out[k]).all() for k in ("texture", "texture_alpha", "mesh", "image_256")):
        raise DataError(f"{path}: pseudo-GT holds NaN or infinite values")
    return out


def mirror_uv(tensor: torch.Tensor) -> torch.Tensor:
    """The "virtual" mirror of a UV map (..., H, W), as ConvMesh: flip along u, roll by half the
    width. It is what re-projecting the mirrored image would give for a symmetric template."""
    width = tensor.shape[-1]
    return torch.roll(tensor.flip(-1), shifts=width // 2, dims=-1)


class PseudoGTDataset(torch.utils.data.Dataset):
    """The pseudo-GT files of one folder, for pretraining.

    Items: texture, texture_alpha, mesh (mirrored in UV space at random when `mirror`), image_256,
    mask_256 and camera (mirrored consistently: image flipped, camera mirrored), class_id, index.
    """

    def __init__(self, folder: str | os.PathLike, mirror: bool = True):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DataError(f"{self.folder}: pseudo-GT folder not found (build it with scripts/build_pseudogt.py)")
        self.paths = sorted(self.folder.glob("*.npz"))
        if not self.paths:
            raise DataError(f"{self.folder}: no pseudo-GT .npz files")
        self.mirror = mirror
        first = load_pseudogt(self.paths[0])
        self.texture_size = first["texture"].shape[-1]
        self.image_size = first["image_256"].shape[-1]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        item = load_pseudogt(self.paths[index])
        if item["texture"].shape[-1] != self.texture_size:
            raise DataError(f"{self.paths[index]}: texture is {item['texture'].shape[-1]} wide, "
                            f"the folder's first file {self.texture_size}")
        if self.mirror and torch.rand(()) < 0.5:
            for key in ("texture", "texture_alpha", "mesh"):
                item[key] = mirror_uv(item[key])
            item["image_256"] = item["image_256"].flip(-1)
            item["mask_256"] = item["mask_256"].flip(-1)
            item["camera"] = WeakPerspectiveCamera.from_tensor(item["camera"][None]).mirrored().to_tensor()[0]
        item["index"] = index
        return item
