"""PASCAL3D+ cars as CMR and ConvMesh use them (docs/method.md section 9).

    ROOT/PASCAL3D+_release1.1/Images/car_imagenet/<name>.JPEG, Images/car_pascal/<name>.jpg
                              CAD/car.mat           struct array `car`, one approximate CAD model per
                                                    sub-type: vertices (V, 3), faces (F, 3) 1-based
    ROOT/data/car_<split>.mat                       CMR's `images` struct array (meshinv.data.cmr) with
                                                    cad_index (1-based), voc_image_id, voc_rec_id, is_train
    ROOT/data/car_kps.mat                           kp_names, kp_perm_inds (1-based left/right swap)
    ROOT/sfm/car_<split>.mat                        CMR's `sfm_anno` struct array, S, conv_tri
    ROOT/p3d_labels.csv                             optional: ConvMesh's labels, "filename,color1,color2,shape,..."

data/ and sfm/ may sit under ROOT/cache/, directly under ROOT (ConvMesh's layout), or under ROOT/p3d/
(CMR's own: ROOT is CMR's cachedir, holding PASCAL3D+_release1.1/ beside p3d/data/ and p3d/sfm/ as
its preprocess_p3d.m writes them); the first that holds data/<category>_*.mat is used
(P3D_CACHE_DIRS). CMR's splits: train (PASCAL VOC train images and all ImageNet images), val
(PASCAL VOC val images), all. Each entry is one car instance, so an image with two cars gives two
samples: image ids are "<voc_image_id>_<voc_rec_id>". ConvMesh trains its GAN on the ImageNet
subset of train (subset="imagenet").
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .cmr import IMAGE_FIELDS, CmrDataset, as_text, check_fields, load_mat, struct_list
from .info import DatasetInfo
from .preprocess import CropConfig
from .sample import DataError

log = logging.getLogger(__name__)

P3D_SPLITS = ("train", "val", "all")
P3D_SUBSETS = ("all", "imagenet", "pascal")
# class_id of a sample: "single" = 0 for every car; "cad" = the CAD sub-type (cad_index - 1);
# "labels" = the shape label of ConvMesh's p3d_labels.csv (sorted label names), -1 if unlisted.
P3D_CLASS_MODES = ("single", "cad", "labels")


@dataclass(frozen=True)
class P3DPaths:
    root: Path
    release_dir: Path    # PASCAL3D+_release1.1/
    cache_dir: Path      # holds data/ and sfm/
    category: str = "car"

    @property
    def image_dir(self) -> Path:
        return self.release_dir / "Images"

    @property
    def cad(self) -> Path:
        return self.release_dir / "CAD" / f"{self.category}.mat"

    def annotation(self, split: str) -> Path:
        return self.cache_dir / "data" / f"{self.category}_{split}.mat"

    def sfm(self, split: str) -> Path:
        return self.cache_dir / "sfm" / f"{self.category}_{split}.mat"

    @property
    def keypoints(self) -> Path:
        return self.cache_dir / "data" / f"{self.category}_kps.mat"

    @property
    def labels(self) -> Path:
        return self.root / "p3d_labels.csv"


# Where data/ and sfm/ may sit under a PASCAL3D+ root, in the order they are looked for.
P3D_CACHE_DIRS = ("cache", ".", "p3d")


def find_p3d_cache(root: str | os.PathLike, category: str = "car") -> Optional[Path]:
    """The folder under root whose data/ holds <category>_*.mat (see P3D_CACHE_DIRS), or None."""
    for sub in P3D_CACHE_DIRS:
        folder = Path(root) / sub
        if any((folder / "data").glob(f"{category}_*.mat")):
            return folder
    return None


def p3d_paths(root: str | os.PathLike, category: str = "car") -> P3DPaths:
    root = Path(root)
    cache = find_p3d_cache(root, category) or root  # none: errors then name ROOT/data/... as missing
    return P3DPaths(root, root / "PASCAL3D+_release1.1", cache, category)


def read_keypoint_permutation(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """(K,) 0-based left/right permutation and the keypoint names from <category>_kps.mat."""
    path = Path(path)
    data = load_mat(path, ["kp_perm_inds"], "keypoint permutation")
    perm = np.asarray(data["kp_perm_inds"]).reshape(-1)
    if perm.dtype.kind not in "iuf" or not len(perm):
        raise DataError(f"{path}: kp_perm_inds should be a list of 1-based indices")
    perm = perm.astype(np.int64) - 1
    if sorted(perm.tolist()) != list(range(len(perm))):
        raise DataError(f"{path}: kp_perm_inds is not a permutation of 1..{len(perm)}")
    names = [str(n) for n in np.asarray(data.get("kp_names", [])).reshape(-1)]
    return perm, names


def read_p3d_labels(path: str | os.PathLike) -> tuple[dict[str, tuple[int, int, int]], tuple[list, list, list]]:
    """ConvMesh's p3d_labels.csv -> ({image file name: (shape, color1, color2) ids}, names of each),
    ids numbering the sorted names as ConvMesh does."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()[1:]  # header
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    rows = []
    for number, line in enumerate(lines, 2):
        if not line.strip():
            continue
        fields = line.strip().split(",")
        if len(fields) < 4:
            raise DataError(f"{path}:{number}: expected filename,color1,color2,shape,..., got {line!r}")
        rows.append((fields[0], fields[3], fields[1], fields[2]))
    names = tuple(sorted({row[k] for row in rows}) for k in (1, 2, 3))
    ids = [{n: i for i, n in enumerate(column)} for column in names]
    table = {row[0]: (ids[0][row[1]], ids[1][row[2]], ids[2][row[3]]) for row in rows}
    return table, names


@dataclass(frozen=True)
class CadModel:
    """One approximate CAD model in PASCAL3D+'s object frame: vertices (V, 3) float32, faces
    (F, 3) int64, 0-based."""

    vertices: torch.Tensor
    faces: torch.Tensor


def load_cad_models(path: str | os.PathLike, category: str = "car") -> list[CadModel]:
    """The CAD models of CAD/<category>.mat, in file order (a 1-based cad_index c is entry c - 1)."""
    path = Path(path)
    data = load_mat(path, [category], "PASCAL3D+ CAD models")
    records = struct_list(data[category], path, category)
    check_fields(records, ("vertices", "faces"), path, category)
    models = []
    for index, record in enumerate(records):
        where = f"{path}: {category}({index + 1})"
        vertices = np.asarray(record.vertices, dtype=np.float64)
        faces = np.asarray(record.faces)
        # squeeze_me turns a single row into a vector
        vertices = vertices.reshape(1, 3) if vertices.shape == (3,) else vertices
        faces = faces.reshape(1, 3) if faces.shape == (3,) else faces
        if vertices.ndim != 2 or vertices.shape[1] != 3 or not np.isfinite(vertices).all():
            raise DataError(f"{where}.vertices: expected finite (V, 3), got {vertices.shape}")
        if faces.ndim != 2 or faces.shape[1] != 3 or faces.dtype.kind not in "iuf":
            raise DataError(f"{where}.faces: expected (F, 3) vertex indices, got {faces.dtype} {faces.shape}")
        faces = faces.astype(np.int64) - 1  # MATLAB indices
        if faces.min() < 0 or faces.max() >= len(vertices):
            raise DataError(f"{where}.faces: indices outside 1..{len(vertices)}")
        models.append(CadModel(torch.from_numpy(vertices.astype(np.float32)), torch.from_numpy(faces)))
    return models


class P3DDataset(CmrDataset):
    """One split of PASCAL3D+ cars as preprocessed Samples (cameras and keypoints: meshinv.data.cmr).

    gt["cad_index"] is the 0-based index of the instance's CAD model (the file's cad_index - 1);
    cad_mesh(index) returns that model for the 3D IoU evaluation. With class_mode="labels",
    gt["p3d_labels"] holds ConvMesh's (shape, color1, color2) ids, -1 where the image is unlisted.
    """

    KIND_INFO = DatasetInfo("p3d", has_cameras=True, has_3d_ground_truth=False, has_cad_models=True)

    def __init__(self, root: str | os.PathLike, crop: Optional[CropConfig] = None, split: str = "val",
                 mirror: bool = False, subset: str = "all", class_mode: str = "single", category: str = "car",
                 seed: Optional[int] = None):
        if split not in P3D_SPLITS:
            raise DataError(f"PASCAL3D+ ({category}) has no split {split!r} (splits: {', '.join(P3D_SPLITS)}; "
                            "CMR evaluates on val)")
        if subset not in P3D_SUBSETS:
            raise DataError(f"unknown PASCAL3D+ subset {subset!r} (subsets: {', '.join(P3D_SUBSETS)})")
        if class_mode not in P3D_CLASS_MODES:
            raise DataError(f"unknown PASCAL3D+ class_mode {class_mode!r} (modes: {', '.join(P3D_CLASS_MODES)})")
        self.paths = p3d_paths(root, category)
        self.split, self.subset, self.class_mode = split, subset, class_mode
        super().__init__(self.paths.image_dir, self.paths.annotation(split), self.paths.sfm(split), crop, mirror, seed)
        check_fields(self.records, IMAGE_FIELDS + ("cad_index",), self.annotation_path, "images")
        self.keypoint_names: list[str] = []
        if self.paths.keypoints.is_file():
            self.keypoint_permutation, self.keypoint_names = read_keypoint_permutation(self.paths.keypoints)
        elif mirror:
            raise DataError(f"{self.paths.keypoints}: file not found (mirroring needs kp_perm_inds)")
        if subset != "all":
            prefix = f"{category}_{subset}/"
            self.indices = [i for i in self.indices if self.rel_paths[i].startswith(prefix)]
            self._finish_index()
        self.labels: Optional[dict] = None
        if class_mode == "single":
            self.class_names = (category,)
        if class_mode == "labels":
            if not self.paths.labels.is_file():
                raise DataError(f"{self.paths.labels}: file not found (class_mode='labels')")
            self.labels, self.label_names = read_p3d_labels(self.paths.labels)
            self.class_names = tuple(self.label_names[0])  # class_id is the shape label
            unlisted = sum(Path(self.rel_paths[i]).name not in self.labels for i in self.indices)
            if unlisted:
                log.warning("%s: %d of %d images have no labels (class_id -1)", self.paths.labels, unlisted, len(self))
        self._cad_models: Optional[list[CadModel]] = None
        log.info("PASCAL3D+ %s %s (%s): %d instances from %s", category, split, subset, len(self), self.annotation_path)

    def _image_id(self, record_index: int) -> str:
        record = self.records[record_index]
        if "voc_image_id" in record._fieldnames and "voc_rec_id" in record._fieldnames:
            where = f"{self.annotation_path}: images({record_index + 1})"
            image = as_text(record.voc_image_id, f"{where}.voc_image_id")
            return f"{image}_{int(np.asarray(record.voc_rec_id).reshape(()))}"
        return Path(self.rel_paths[record_index]).stem

    def cad_index(self, record_index: int) -> int:
        """0-based CAD model index of a record."""
        where = f"{self.annotation_path}: images({record_index + 1}).cad_index"
        value = np.asarray(self.records[record_index].cad_index)
        number = float(value.reshape(())) if value.size == 1 and value.dtype.kind in "iuf" else 0.0
        if number < 1 or number % 1:
            raise DataError(f"{where}: expected a positive integer (1-based), got {value!r}")
        return int(number) - 1

    def _labels_of(self, record_index: int) -> tuple[int, int, int]:
        return self.labels.get(Path(self.rel_paths[record_index]).name, (-1, -1, -1))

    def _class_id(self, record_index: int) -> int:
        if self.class_mode == "cad":
            return self.cad_index(record_index)
        if self.class_mode == "labels":
            return self._labels_of(record_index)[0]
        return 0

    def _extra_gt(self, record_index: int) -> dict:
        gt = {"cad_index": torch.tensor(self.cad_index(record_index), dtype=torch.int64)}
        if self.labels is not None:
            gt["p3d_labels"] = torch.tensor(self._labels_of(record_index), dtype=torch.int64)
        return gt

    def cad_models(self) -> list[CadModel]:
        if self._cad_models is None:
            self._cad_models = load_cad_models(self.paths.cad, self.paths.category)
        return self._cad_models

    def cad_mesh(self, cad_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(vertices (V, 3), faces (F, 3) 0-based) of the CAD model with this 0-based index (a
        sample's gt["cad_index"]), in PASCAL3D+'s object frame: aligning it with a reconstruction
        is the evaluation's job."""
        models = self.cad_models()
        if not 0 <= int(cad_index) < len(models):
            raise DataError(f"{self.paths.cad}: no CAD model {int(cad_index)} (0-based; the file has {len(models)})")
        model = models[int(cad_index)]
        return model.vertices, model.faces


def p3d_cad_mesh(root: str | os.PathLike, cad_index: int, category: str = "car") -> tuple[torch.Tensor, torch.Tensor]:
    """(vertices, faces) of CAD model `cad_index` (0-based) under a PASCAL3D+ root, without a dataset."""
    models = load_cad_models(p3d_paths(root, category).cad, category)
    if not 0 <= int(cad_index) < len(models):
        raise DataError(f"{p3d_paths(root, category).cad}: no CAD model {int(cad_index)} (file has {len(models)})")
    return models[int(cad_index)].vertices, models[int(cad_index)].faces
