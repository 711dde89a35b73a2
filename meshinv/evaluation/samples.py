"""The dataset side of an evaluation: what the dataset can give (ground truth, CAD models, its
kind), and its samples matched to the results by image id, each cut with its record's crop.

    SampleSource.of(dataset, crop, split)   None, a dataset folder, or a function crop -> dataset
    source.get(image_id, crop)              the sample, or None when the dataset has no such image
    metric_unavailable(name, dataset, data_dir)   why a metric cannot run with this dataset

A dataset is never copied or changed: a sample at another crop comes from the dataset opened again
with that crop (once per crop; the crop of every result of one run is usually the same).
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, Callable, Optional

from ..data.datasets import open_dataset
from ..data.preprocess import CropConfig
from ..data.sample import Sample
from .metrics import METRIC_INFO

log = logging.getLogger(__name__)

DatasetOpener = Callable[[CropConfig], Any]   # crop -> a dataset (len, [i] -> Sample, image_ids())


def has_ground_truth(dataset) -> bool:
    return dataset.info.has_3d_ground_truth


def has_cameras(dataset) -> bool:
    return dataset.info.has_cameras


def has_cad_models(dataset) -> bool:
    return dataset.info.has_cad_models


def dataset_kind(dataset) -> str:
    return dataset.info.kind


def _dataset_kind(dataset) -> Optional[str]:
    return None if dataset is None else dataset.info.kind


def metric_unavailable(name: str, dataset, data_dir: Optional[str]) -> Optional[str]:
    """Why metric `name` cannot run with this dataset, or None."""
    info = METRIC_INFO[name]
    needs = ((info.needs_gt, has_ground_truth, "ground truth (synthetic data only)"),
             (info.needs_camera, has_cameras, "cameras"),
             (info.needs_cad, has_cad_models, "CAD models (PASCAL3D+ only)"))
    for needed, offers, what in needs:
        if needed and dataset is None:
            return "no dataset given (evaluation.data_dir / --data)"
        if needed and not offers(dataset):
            return f"the dataset {data_dir} has no {what}"
    return None


class SampleSource:
    """Samples of one dataset by image id, at any crop. `open_with(crop)` opens the dataset with a
    crop; `dataset` is the one opened with `crop`, the evaluation's (metric capabilities, CAD models
    and FID reference statistics come from it)."""

    def __init__(self, open_with: DatasetOpener, crop: CropConfig, data_dir: Optional[str] = None):
        self.open_with = open_with
        self.dataset = self._open(crop, data_dir)
        self.data_dir = data_dir or str(getattr(self.dataset, "root", type(self.dataset).__name__))
        self.index = {image_id: i for i, image_id in enumerate(self.dataset.image_ids())}
        self._opened = {repr(crop): (self.dataset, self.index)}

    @classmethod
    def of(cls, dataset: None | str | os.PathLike | DatasetOpener, crop: CropConfig,
           split: Optional[str] = None) -> Optional["SampleSource"]:
        """None for no dataset; a dataset folder of any kind (meshinv.data.datasets.open_dataset, split
        `split`); or a function that opens a dataset with a given crop."""
        if dataset is None:
            return None
        if isinstance(dataset, (str, os.PathLike)):
            return cls(functools.partial(open_dataset, dataset, split=split), crop, str(dataset))
        if callable(dataset):
            return cls(dataset, crop)
        raise TypeError(f"evaluation takes a dataset folder or a function crop -> dataset, not a "
                        f"{type(dataset).__name__} (a dataset object has a crop of its own)")

    def _open(self, crop: CropConfig, data_dir: Optional[str] = None):
        dataset = self.open_with(crop)
        if getattr(dataset, "mirror", False):
            raise ValueError(f"the dataset {data_dir or getattr(dataset, 'root', '')} mirrors its samples; "
                             "evaluation compares unmirrored ones")
        return dataset

    def get(self, image_id: str, crop: CropConfig) -> Optional[Sample]:
        """The sample of `image_id` cut with `crop`; None when the dataset has no such image."""
        if image_id not in self.index:
            return None
        key = repr(crop)
        if key not in self._opened:
            log.info("opening %s again with the crop %s", self.data_dir, crop)
            dataset = self._open(crop, self.data_dir)
            self._opened[key] = (dataset, {i: k for k, i in enumerate(dataset.image_ids())})
        dataset, index = self._opened[key]
        return dataset[index[image_id]]
