"""One entry point for every dataset: open_dataset(root or name, crop, split=..., ...).

Kinds, and the files that identify them (datasets/README.md has the full layouts):

    synthetic  ROOT/<split>/images/ and gt/ (or ROOT/images/ and gt/)   meshinv.data.synthetic
    folder     ROOT/<split>/images/ (or ROOT/images/, or photos directly in ROOT)   meshinv.data.folder
    cub        ROOT/CUB_200_2011/, or a CMR cache ROOT/[cache/]data/*_cub_cleaned.mat
    p3d        ROOT/PASCAL3D+_release1.1/, or a CMR cache ROOT/[cache/ or p3d/]data/car_*.mat

Every dataset has the same interface: len(), dataset[i] -> Sample (DataError for a bad item),
image_ids() -> list of str.
"""

from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path
from typing import Optional

from .cub import CUBDataset
from .folder import FolderDataset, holds_images
from .p3d import P3DDataset, find_p3d_cache
from .preprocess import CropConfig
from .sample import DataError

log = logging.getLogger(__name__)

DATASET_KINDS = ("synthetic", "folder", "cub", "p3d")
DEFAULT_SPLITS = {"synthetic": "test", "folder": "test", "cub": "test", "p3d": "val"}
# Names that open_dataset resolves to a folder of datasets_dir() when no such path exists.
_NAMES = ("synthetic", "cub", "p3d")


def _dataset_class(kind: str):
    if kind == "synthetic":
        from .synthetic import SyntheticDataset  # imported when used: it pulls in the renderer

        return SyntheticDataset
    return {"folder": FolderDataset, "cub": CUBDataset, "p3d": P3DDataset}[kind]


def datasets_dir() -> Path:
    """$MESHINV_DATASETS_DIR, else the repository's datasets/ folder."""
    if os.environ.get("MESHINV_DATASETS_DIR"):
        return Path(os.environ["MESHINV_DATASETS_DIR"])
    return Path(__file__).resolve().parents[2] / "datasets"


def dataset_root(root_or_name: str | os.PathLike) -> Path:
    """The folder a dataset argument names: a path, or one of the names synthetic, cub, p3d (a folder
    of datasets_dir()) when no such path exists."""
    root = Path(root_or_name)
    if str(root_or_name) in _NAMES and not root.exists():
        return datasets_dir() / str(root_or_name)
    return root


def _split_folder(root: Path, split: Optional[str], marker: str) -> Optional[Path]:
    """ROOT/<split> if it holds `marker`, else ROOT if it does, else None."""
    if split and (root / split / marker).is_dir():
        return root / split
    if (root / marker).is_dir():
        return root
    return None


def _is_cub(root: Path) -> bool:
    return (root / "CUB_200_2011").is_dir() or any(
        any((root / sub / "data").glob("*_cub_cleaned.mat")) for sub in ("cache", "."))


def _is_p3d(root: Path) -> bool:
    return (root / "PASCAL3D+_release1.1").is_dir() or find_p3d_cache(root) is not None


def _is_synthetic(root: Path, split: Optional[str]) -> bool:
    folder = _split_folder(root, split, "images")
    return folder is not None and (folder / "gt").is_dir()


def detect_kind(root: str | os.PathLike, split: Optional[str] = None) -> Optional[str]:
    """The dataset kind of a folder (see the module doc), or None. split None: the default, test."""
    root = Path(root)
    split = split or DEFAULT_SPLITS["folder"]
    if _is_cub(root):
        return "cub"
    if _is_p3d(root):
        return "p3d"
    if _is_synthetic(root, split):
        return "synthetic"
    if _split_folder(root, split, "images") is not None or holds_images(root):
        return "folder"
    return None


def _looked_for(split: Optional[str]) -> str:
    split = split or DEFAULT_SPLITS["folder"]
    return ("CUB_200_2011/ or [cache/]data/*_cub_cleaned.mat (cub); PASCAL3D+_release1.1/ or "
            f"[cache/ or p3d/]data/car_*.mat (p3d); {split}/images/ or images/ with gt/ beside it (synthetic); "
            f"{split}/images/, images/ or image files in it (folder)")


def open_dataset(root_or_name: str | os.PathLike, crop: Optional[CropConfig] = None, split: Optional[str] = None,
                 kind: Optional[str] = None, mirror: bool = False, **options):
    """Open a dataset folder (or one of the names synthetic, cub, p3d: a folder of datasets_dir()).

    split: None = the kind's default (test; val for p3d). kind: None = detected from the files.
    options go to the dataset class: cub: use_predicted_mask, predicted_mask_dir, seed; p3d: subset,
    class_mode, category, seed; folder: require_camera, require_class. An unknown option is an error.
    """
    root = dataset_root(root_or_name)
    if root != Path(root_or_name):
        kind = kind or str(root_or_name)
    if kind is not None and kind not in DATASET_KINDS:
        raise DataError(f"unknown dataset kind {kind!r} (kinds: {', '.join(DATASET_KINDS)})")
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    kind = kind or detect_kind(root, split)
    if kind is None:
        raise DataError(f"{root}: no dataset recognised; looked under it for {_looked_for(split)}")
    cls = _dataset_class(kind)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "root", "crop", "split", "mirror"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise DataError(f"{kind} datasets take no option {', '.join(unknown)} "
                        f"(options: {', '.join(sorted(accepted)) or 'none'})")
    split = split or DEFAULT_SPLITS[kind]
    if kind in ("cub", "p3d"):
        return cls(root, crop, split=split, mirror=mirror, **options)
    folder = _split_folder(root, split, "images")
    if folder is None and kind == "folder" and holds_images(root):
        folder = root  # a plain folder of photos, as scripts/invert.py --images takes
    if folder is None:
        raise DataError(f"{root}: no images/ folder for a {kind} dataset (looked in {root / split} and {root})")
    if kind == "synthetic" and not (folder / "gt").is_dir():
        raise DataError(f"{folder}: no gt/ folder (a synthetic split has images/, masks/, gt/)")
    return cls(folder, crop, mirror=mirror, **options)
