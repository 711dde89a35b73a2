"""Automatic foreground masks for photos that come without one.

The default backend is torchvision's Mask R-CNN (ResNet-50 FPN, COCO), with the weight file
`maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth` looked up, or fetched into the torch hub cache as
torchvision does, by meshinv.utils.weights.find_weights. Of the detections of the configured COCO category whose score reaches the threshold,
the one with the largest mask wins; when there is none the result is None ("nothing found").
MeshInversion's CUB masks came from PointRend (detectron2); `backend: pointrend` uses it when
detectron2 is installed, with its own config and weight files.

`cached_mask` keeps one PNG per image (0 / 255, the folder format's masks/<stem>.png), written
atomically, and a `<stem>.none` marker for images where nothing was found, so that a rerun does
not segment again.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch

from ..utils.config import at_least, require, within
from ..utils.io import save_image, save_text
from ..utils.weights import MissingWeightsError, find_weights
from ..utils.images import image_shape, read_image, read_mask
from .sample import DataError

log = logging.getLogger(__name__)

MASKRCNN_WEIGHTS = "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"  # torchvision's COCO_V1 file
# COCO category ids: torchvision's 91-entry list (0 = background) and detectron2's 80 contiguous ids.
TORCHVISION_COCO = {"bird": 16, "car": 3}
DETECTRON2_COCO = {"bird": 14, "car": 2}


@dataclass
class SegmentConfig:
    """How automatic masks are made (the `segment` YAML section)."""

    backend: Literal["maskrcnn", "pointrend"] = "maskrcnn"   # torchvision | detectron2 (if installed)
    category: Literal["bird", "car"] = "bird"   # COCO category kept (TORCHVISION_COCO, DETECTRON2_COCO)
    score_threshold: float = 0.7       # detections below this confidence are ignored
    mask_threshold: float = 0.5        # a pixel is foreground where the soft mask reaches this
    weights: str = MASKRCNN_WEIGHTS    # file name (searched in the pretrained folders, else fetched) or path
    allow_random_weights: bool = False  # tests only: a missing weight file gives a random network
    min_size: int = 800                # Mask R-CNN resizes the shorter side to this (torchvision default)
    max_size: int = 1333
    pointrend_config: Optional[str] = None  # detectron2 PointRend config YAML (backend: pointrend)
    pointrend_weights: Optional[str] = None  # its model file, looked up like `weights`

    def validate(self) -> None:
        within(self, 0, 1, "score_threshold", "mask_threshold")
        at_least(self, 1, "min_size")
        require(self.max_size >= self.min_size, "max_size", f"must be >= min_size ({self.min_size}), got {self.max_size}")


@dataclass
class Detections:
    """Instances in one image: labels (N,) long, scores (N,), soft masks (N, H, W) in [0, 1]."""

    labels: torch.Tensor
    scores: torch.Tensor
    masks: torch.Tensor


def select_instance(detections: Detections, label: int, score_threshold: float,
                    mask_threshold: float = 0.5) -> Optional[np.ndarray]:
    """The (H, W) bool mask of the largest instance of `label` scoring at least `score_threshold`,
    or None when there is none (or all such masks are empty)."""
    keep = (detections.labels == label) & (detections.scores >= score_threshold)
    if not bool(keep.any()):
        return None
    masks = detections.masks[keep] >= mask_threshold
    areas = masks.flatten(1).sum(-1)
    best = int(areas.argmax())
    if int(areas[best]) == 0:
        return None
    return masks[best].cpu().numpy()


def _build_maskrcnn(cfg: SegmentConfig) -> torch.nn.Module:
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    try:
        path = find_weights(cfg.weights, what="Mask R-CNN (automatic masks)")
    except MissingWeightsError:
        if not cfg.allow_random_weights:
            raise
        path = None
    # weights=None and weights_backbone=None: the file comes from find_weights, which searches the
    # local folders before it downloads (torchvision would only look in the hub cache).
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91,
                                  min_size=cfg.min_size, max_size=cfg.max_size)
    if path is None:
        log.warning("!!! %s is missing: Mask R-CNN has RANDOM weights (segment.allow_random_weights); its masks "
                    "are meaningless !!!", cfg.weights)
        return model.eval()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    log.info("Mask R-CNN weights: %s", path)
    return model.eval()


class _PointRend:
    """detectron2's PointRend behind the same call as torchvision's detector (list of images ->
    list of dicts with labels, scores, masks)."""

    def __init__(self, cfg: SegmentConfig, device: torch.device):
        try:
            from detectron2.config import get_cfg
            from detectron2.engine import DefaultPredictor
            from detectron2.projects import point_rend
        except ImportError as err:
            raise ImportError(f"segment.backend 'pointrend' needs detectron2 with its PointRend project, which "
                              f"cannot be imported here ({err}); install detectron2 or use backend: maskrcnn") from None
        if not cfg.pointrend_config or not cfg.pointrend_weights:
            raise ValueError("segment.backend 'pointrend' needs segment.pointrend_config (a detectron2 YAML) and "
                             "segment.pointrend_weights (its model file)")
        d2 = get_cfg()
        point_rend.add_pointrend_config(d2)
        d2.merge_from_file(cfg.pointrend_config)
        d2.MODEL.WEIGHTS = str(find_weights(cfg.pointrend_weights, what="PointRend (automatic masks)"))
        d2.MODEL.DEVICE = str(device)
        self.predictor = DefaultPredictor(d2)

    def __call__(self, images: list[torch.Tensor]) -> list[dict]:
        outputs = []
        for image in images:
            # DefaultPredictor takes an (H, W, 3) uint8 BGR array.
            bgr = (image.permute(1, 2, 0).flip(-1).clamp(0, 1) * 255).round().byte().cpu().numpy()
            instances = self.predictor(bgr)["instances"]
            outputs.append({"labels": instances.pred_classes, "scores": instances.scores,
                            "masks": instances.pred_masks.float()[:, None]})
        return outputs


class Segmenter:
    """`Segmenter(cfg, device).segment(image)` -> (H, W) bool mask or None (nothing found)."""

    def __init__(self, cfg: SegmentConfig, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        labels = DETECTRON2_COCO if cfg.backend == "pointrend" else TORCHVISION_COCO
        if cfg.category not in labels:
            raise ValueError(f"segment.category {cfg.category!r} is not one of {sorted(labels)}")
        self.label = labels[cfg.category]
        if cfg.backend == "maskrcnn":
            self.model = _build_maskrcnn(cfg).to(self.device)
        elif cfg.backend == "pointrend":
            self.model = _PointRend(cfg, self.device)
        else:
            raise ValueError(f"segment.backend {cfg.backend!r} is not one of ['maskrcnn', 'pointrend']")

    @torch.no_grad()
    def detect(self, image: np.ndarray) -> Detections:
        """All instances in an (H, W, 3) float image in [0, 1]."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"segment expects an (H, W, 3) image in [0, 1], got shape {image.shape}")
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1).to(self.device)
        output = self.model([tensor])[0]
        masks = output["masks"]
        masks = masks[:, 0] if masks.dim() == 4 else masks
        return Detections(output["labels"].cpu(), output["scores"].cpu(), masks.float().cpu())

    def segment(self, image: np.ndarray) -> Optional[np.ndarray]:
        """(H, W) bool mask of the largest confident instance of the category, or None."""
        return select_instance(self.detect(image), self.label, self.cfg.score_threshold, self.cfg.mask_threshold)


def cached_mask(segmenter: Segmenter, image_path: str | os.PathLike, cache_dir: str | os.PathLike
                ) -> Optional[np.ndarray]:
    """The mask of one image file, from `cache_dir/<stem>.png` when present, else segmented and
    written there (atomically); None when nothing was found (remembered as `<stem>.none`)."""
    image_path, cache_dir = Path(image_path), Path(cache_dir)
    png, none = cache_dir / f"{image_path.stem}.png", cache_dir / f"{image_path.stem}.none"
    if png.is_file():
        return read_mask(png, image_shape(image_path)) > 0.5
    if none.is_file():
        return None
    image = read_image(image_path)
    mask = segmenter.segment(image)
    if mask is None:
        log.warning("%s: no %s found above score %.2f", image_path, segmenter.cfg.category,
                    segmenter.cfg.score_threshold)
        save_text(none, f"no {segmenter.cfg.category} found by {segmenter.cfg.backend}\n")
        return None
    save_image(png, mask.astype(np.uint8) * 255)
    return mask


def images_without_masks(dataset) -> list[Path]:
    """The image files of a FolderDataset that have no mask in any of its mask folders."""
    missing = []
    for path in dataset.image_paths:
        try:
            dataset.mask_path(path.stem)
        except DataError:
            missing.append(path)
    return missing


def _one_line(text: str) -> str:
    """A multi-line message (e.g. a weight file's search folders) as one line for a per-image reason."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    note = [lines.pop()] if len(lines) > 1 and lines[-1].startswith("(") else []  # "(see ...)" ends it
    return " ".join(lines[:1] + [", ".join(lines[1:])] + note).strip()


def segment_missing(dataset, cache_dir: str | os.PathLike, cfg: SegmentConfig,
                    device: torch.device | str = "cpu") -> dict[str, int]:
    """Segment the images of a FolderDataset that have no mask in any of its mask folders, into
    `cache_dir` (cached: a rerun segments nothing again). Returns counts: missing, found, nothing,
    unavailable.

    When the segmenter cannot be built (e.g. its weight file is missing) or fails on one image, the
    images concerned get that reason in `dataset.mask_unavailable`, so that reading them raises a
    DataError saying why and where a mask can be put instead; the images that have masks go on."""
    missing = images_without_masks(dataset)
    counts = {"missing": len(missing), "found": 0, "nothing": 0, "unavailable": 0}
    if not missing:
        return counts
    try:
        segmenter = Segmenter(cfg, device)
    except ValueError:
        raise  # a wrong setting (category, backend): every image would fail the same way
    except Exception as err:  # noqa: BLE001 -- missing or damaged weights, no detectron2: per image
        reason = f"automatic masks are unavailable: {_one_line(err)}"
        for path in missing:
            dataset.mask_unavailable[path.stem] = reason
        counts["unavailable"] = len(missing)
        log.warning("%d of %d images have no mask and %s; they are left out (put their masks in %s), the "
                    "others go on", len(missing), len(dataset.image_paths), reason, dataset.mask_dirs[0])
        return counts
    for path in missing:
        try:
            found = cached_mask(segmenter, path, cache_dir) is not None
        except DataError as err:  # an unreadable image: the dataset reports it when loading
            log.warning("%s", err)
            continue
        except Exception as err:  # noqa: BLE001 -- one image's failure must not stop the others
            dataset.mask_unavailable[path.stem] = f"segmentation failed: {type(err).__name__}: {_one_line(err)}"
            counts["unavailable"] += 1
            log.warning("%s: %s", path, dataset.mask_unavailable[path.stem])
            continue
        counts["found" if found else "nothing"] += 1
    log.info("automatic masks: %d images had none; %d segmented, %d with no %s found, %d failed (cached in %s)",
             counts["missing"], counts["found"], counts["nothing"], cfg.category, counts["unavailable"], cache_dir)
    return counts
