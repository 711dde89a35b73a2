"""One entry point for every dataset: open_dataset(root or name, crop, split=..., ...).

Kinds, and the files that identify them (datasets/README.md has the full layouts):

    synthetic  ROOT/<split>/images/ and gt/ (or ROOT/images/ and gt/)   meshinv.data.synthetic
    folder     ROOT/<split>/images/ (or ROOT/images/, or photos directly in ROOT)   meshinv.data.folder
    cub        ROOT/CUB_200_2011/, or a CMR cache ROOT/[cache/]data/*_cub_cleaned.mat
    p3d        ROOT/PASCAL3D+_release1.1/, or a CMR cache ROOT/[cache/ or p3d/]data/car_*.mat

Every dataset has the same interface: len(), dataset[i] -> Sample (DataError for a bad item),
image_ids() -> list of str, and .info (meshinv.data.info.DatasetInfo: its kind, whether its samples
carry cameras, 3D ground truth, CAD models, its class names). KINDS below is the one registry of
kinds; every consumer asks it or a dataset's .info rather than testing classes or files.
"""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from .cub import CUBDataset
from .folder import FolderDataset, holds_images
from .info import DatasetInfo
from .p3d import P3DDataset, find_p3d_cache
from .preprocess import CropConfig
from .sample import DataError
from .synthetic import SyntheticDataset

log = logging.getLogger(__name__)

# Names that open_dataset resolves to a folder of datasets_dir() when no such path exists.
_NAMES = ("synthetic", "cub", "p3d")


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


def split_folder(root: Path, split: Optional[str], marker: str) -> Optional[Path]:
    """ROOT/<split> if it holds `marker`, else ROOT if it does, else None."""
    if split and (root / split / marker).is_dir():
        return root / split
    if (root / marker).is_dir():
        return root
    return None


def _is_cub(root: Path, split: str) -> bool:
    return (root / "CUB_200_2011").is_dir() or any(
        any((root / sub / "data").glob("*_cub_cleaned.mat")) for sub in ("cache", "."))


def _is_p3d(root: Path, split: str) -> bool:
    return (root / "PASCAL3D+_release1.1").is_dir() or find_p3d_cache(root) is not None


def _is_synthetic(root: Path, split: str) -> bool:
    folder = split_folder(root, split, "images")
    return folder is not None and (folder / "gt").is_dir()


def _is_folder(root: Path, split: str) -> bool:
    return split_folder(root, split, "images") is not None or holds_images(root)


def _root_itself(root: Path, split: str) -> Path:
    return root  # the reader finds its split's files itself


def _images_folder(root: Path, split: str, kind: str) -> Path:
    folder = split_folder(root, split, "images")
    if folder is None:
        raise DataError(f"{root}: no images/ folder for a {kind} dataset (looked in {root / split} and {root})")
    return folder


def _folder_split(root: Path, split: str) -> Path:
    if split_folder(root, split, "images") is None and holds_images(root):
        return root  # a plain folder of photos, as scripts/invert.py --images takes
    return _images_folder(root, split, "folder")


def _synthetic_split(root: Path, split: str) -> Path:
    folder = _images_folder(root, split, "synthetic")
    if not (folder / "gt").is_dir():
        raise DataError(f"{folder}: no gt/ folder (a synthetic split has images/, masks/, gt/)")
    return folder


@dataclass(frozen=True)
class DatasetKind:
    """One kind of dataset: its reader (a class with KIND_INFO and `.info`), its default split, how a
    folder of it is recognised, and what the reader is given."""

    reader: type
    default_split: str
    recognise: Callable[[Path, str], bool]    # (root, split) -> does ROOT hold this kind
    looks_for: str                            # what `recognise` looks for; {split} is filled in
    locate: Callable[[Path, str], Path]       # (root, split) -> the reader's root (DataError if none)
    takes_split: bool                         # reader(root, crop, split=...) rather than reader(split folder, crop)

    @property
    def name(self) -> str:
        return self.reader.KIND_INFO.kind


# The one registry of dataset kinds, in the order detect_kind tries them (a synthetic split is also
# a folder, so it comes first). A new kind is one reader class and one entry here.
KINDS: tuple[DatasetKind, ...] = (
    DatasetKind(CUBDataset, "test", _is_cub, "CUB_200_2011/ or [cache/]data/*_cub_cleaned.mat", _root_itself, True),
    DatasetKind(P3DDataset, "val", _is_p3d, "PASCAL3D+_release1.1/ or [cache/ or p3d/]data/car_*.mat",
                _root_itself, True),
    DatasetKind(SyntheticDataset, "test", _is_synthetic, "{split}/images/ or images/ with gt/ beside it",
                _synthetic_split, False),
    DatasetKind(FolderDataset, "test", _is_folder, "{split}/images/, images/ or image files in it", _folder_split,
                False),
)
DATASET_KINDS = tuple(k.name for k in KINDS)
_BY_NAME = {k.name: k for k in KINDS}
_DETECTION_SPLIT = "test"  # the split detect_kind looks for when given none


def dataset_kind(kind: str) -> DatasetKind:
    """The registered kind of this name; a DataError listing the kinds for any other."""
    if kind not in _BY_NAME:
        raise DataError(f"unknown dataset kind {kind!r} (kinds: {', '.join(DATASET_KINDS)})")
    return _BY_NAME[kind]


def kind_info(kind: str) -> DatasetInfo:
    """What every dataset of this kind offers (an opened dataset's `.info` may offer more, e.g. a
    folder whose annotations give every image a camera)."""
    return dataset_kind(kind).reader.KIND_INFO


def detect_kind(root: str | os.PathLike, split: Optional[str] = None) -> Optional[str]:
    """The dataset kind of a folder (see the module doc), or None. split None: the default, test."""
    root = Path(root)
    split = split or _DETECTION_SPLIT
    return next((k.name for k in KINDS if k.recognise(root, split)), None)


def _looked_for(split: Optional[str]) -> str:
    split = split or _DETECTION_SPLIT
    return "; ".join(f"{k.looks_for.format(split=split)} ({k.name})" for k in KINDS)


def open_dataset(root_or_name: str | os.PathLike, crop: Optional[CropConfig] = None, split: Optional[str] = None,
                 kind: Optional[str] = None, mirror: bool = False, **options):
    """Open a dataset folder (or one of the names synthetic, cub, p3d: a folder of datasets_dir()).

    split: None = the kind's default (test; val for p3d). kind: None = detected from the files.
    options go to the dataset class: cub: use_predicted_mask, predicted_mask_dir, seed; p3d: subset,
    class_mode, category, seed; folder: require_camera, require_class. An unknown option is an error.
    What the opened dataset offers is its `.info` (meshinv.data.info.DatasetInfo).
    """
    root = dataset_root(root_or_name)
    if root != Path(root_or_name):
        kind = kind or str(root_or_name)
    entry = dataset_kind(kind) if kind is not None else None
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    if entry is None:
        detected = detect_kind(root, split)
        if detected is None:
            raise DataError(f"{root}: no dataset recognised; looked under it for {_looked_for(split)}")
        entry = _BY_NAME[detected]
    cls = entry.reader
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "root", "crop", "split", "mirror"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise DataError(f"{entry.name} datasets take no option {', '.join(unknown)} "
                        f"(options: {', '.join(sorted(accepted)) or 'none'})")
    split = split or entry.default_split
    location = entry.locate(root, split)
    if entry.takes_split:
        return cls(location, crop, split=split, mirror=mirror, **options)
    return cls(location, crop, mirror=mirror, **options)
