"""Training and running the CMR-style camera predictor (meshinv.models.camera).

Training regresses each image's dataset camera (`Sample.camera`: the synthetic ground truth, or
the SfM poses of the CUB / PASCAL3D+ readers) with CMR's camera loss (akanazawa/cmr
`nnutils/loss_utils.py: camera_loss` with margin 0):

    L = mean over (s, tx, ty) of the squared error  +  mean over images of (1 - |<q, q_gt>|)

<q, q_gt> is the real part of q * conj(q_gt), cos(angle / 2), so q and -q, the same rotation, cost
the same. (Not 1 - <q, q_gt>^2: CMR's geodesic version takes the absolute value.)
Augmentation, applied to image and camera together so that the target stays exact: horizontal
mirroring (`mirror_ndc_camera`: q -> (w, x, -y, -z), tx -> -tx; the objects are mirror-symmetric)
and a small zoom and shift of the crop (x' = k x + a, y' = k y + b in NDC gives s' = k s,
tx' = k tx + a, ty' = k ty - b, since NDC y = -(camera y)).

Every image is decoded and cropped once, at the training size, into memory (uint8), so the loop
is not I/O bound. The loop is resumable: batch order and augmentation come from (seed, step).

`predict_cameras` writes the original's `cmr_pred_cam.pth` entries: per image stem, `pred_cam`
(7,) and `pred_pose_overlay_iou`, the IoU of the target mask with the silhouette of a mean shape
seen through the predicted camera (inversion trusts the prediction only above 0.7, docs/method.md section 6).
The mean shape is, in order of preference: a `mean_shape` file given in the config, the one stored
in the predictor's checkpoint (training stores its `mean_shape`, else the SfM mean shape of a CUB /
PASCAL3D+ split, else the mean ground-truth shape of a synthetic split), or the undeformed
template (a sphere: its silhouette ignores the rotation, so its IoU only checks scale and
translation).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Literal, Optional, get_args

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data.folder import FolderDataset
from ..data.preprocess import CropConfig, mirror_ndc_camera
from ..data.camera_predictions import TRUSTED_OVERLAY_IOU as TRUSTED_IOU, prediction_entry
from ..data.sample import DataError, Sample
from ..geometry.camera import WeakPerspectiveCamera, normalize_quaternion, quaternion_to_matrix
from ..geometry.template import MeshTemplate, TemplateConfig, build_template
from ..models.camera import CameraPredictor, RotationHead, save_camera_predictor
from ..render.settings import Renderer, make_renderer
from ..utils.config import at_least, check, greater_than, require, to_dict, validate_config
from ..utils.io import save_json
from ..utils.masks import mask_iou
from .config import check_adam_betas
from .runs import LATEST, epoch_order, finite_loss, read_training_checkpoint, set_lr, timing_summary

log = logging.getLogger(__name__)

LrDecay = Literal["none", "cosine"]
RotationLoss = Literal["quaternion", "matrix"]
ROTATION_LOSSES = get_args(RotationLoss)
FINAL = "camera_predictor.pt"


@dataclass
class CameraPredictConfig:
    """scripts/predict_cameras.py: cameras for a folder of photos (the `camera.predict` section)."""

    data: Optional[str] = None         # folder-format root (images/, masks/); --data
    checkpoint: Optional[str] = None   # None: <camera.out_dir>/camera_predictor.pt; --checkpoint
    out: Optional[str] = None          # None: <data>/cmr_pred_cam.pth; --out
    batch_size: int = 32
    auto_masks: bool = False           # segment images without masks/<stem>.png first (the `segment` section)

    def validate(self) -> None:
        at_least(self, 1, "batch_size")


@dataclass
class CameraTrainConfig:
    """The camera predictor: data, architecture, training (the `camera` YAML section)."""

    dataset: str = "folder"            # reader of <data>/<split>: folder (incl. synthetic) | cub | p3d
    data: str = "datasets/synthetic"
    train_split: str = "train"
    eval_split: Optional[str] = "val"  # held-out split of the final evaluation (None: no evaluation)
    out_dir: str = "runs/camera"
    image_size: int = 128              # predictor input, a multiple of 64 (CMR: 256)
    padding: float = 0.05              # crop box padding; must match the crops that use the cameras
    feature_dim: int = 200             # CMR's nz_feat
    pretrained_trunk: bool = True      # ImageNet ResNet-18 (pretrained/README.md)
    allow_random_trunk: bool = False   # a missing ResNet-18 file: warn and train from scratch instead of failing
    seed: int = 0
    batch_size: int = 16
    max_steps: int = 3000
    lr: float = 1.0e-4                 # Adam, CMR's settings
    betas: tuple[float, float] = (0.9, 0.999)
    rotation_head: RotationHead = "quaternion"  # quaternion (CMR) | 6d (continuous; meshinv.models.camera)
    masked_input: bool = False         # predict from the masked object (background -> white); needs masks
    rotation_loss: RotationLoss = "quaternion"  # quaternion: CMR's 1 - |<q, q_gt>| | matrix: |R - R_gt|_F^2
    lr_decay: LrDecay = "none"         # none (CMR) | cosine: lr * (1 + cos(pi t / max_steps)) / 2
    rotation_weight: float = 1.0
    scale_translation_weight: float = 1.0
    mirror: bool = True                # mirror half of the images (with their cameras)
    zoom: float = 0.05                 # crop zoom factor uniform in [1 - zoom, 1 + zoom]
    shift: float = 0.1                 # crop shift uniform in [-shift, shift] NDC (0.1 = 5% of the side)
    num_workers: int = 0               # processes decoding images into the cache
    log_every: int = 10
    eval_every: int = 500              # also at the end; 0 = only at the end
    checkpoint_every: int = 200
    eval_batch_size: int = 32
    mean_shape: Optional[str] = None   # .npz with `vertices` (V, 3) [+ `faces`] or `deformation_map` (3, H, W)
    predict: CameraPredictConfig = field(default_factory=CameraPredictConfig)

    # What a resumed run may change: where it writes, how long it runs (a cosine decay then follows
    # the new length), what it logs and evaluates, and prediction (a separate script).
    RUN_ONLY: ClassVar[tuple[str, ...]] = (
        "out_dir", "max_steps", "num_workers", "allow_random_trunk", "log_every", "eval_split", "eval_every",
        "checkpoint_every", "eval_batch_size", "predict")

    def validate(self) -> None:
        require(self.dataset in CAMERA_DATASETS, "dataset",
                f"must be one of {', '.join(sorted(CAMERA_DATASETS))} (or a reader registered with "
                f"register_camera_dataset), got {self.dataset!r}")
        require(self.image_size >= 64 and self.image_size % 64 == 0, "image_size",
                f"must be a positive multiple of 64, got {self.image_size}")
        at_least(self, 1, "feature_dim", "batch_size", "max_steps", "log_every", "checkpoint_every", "eval_batch_size")
        at_least(self, 0, "padding", "rotation_weight", "scale_translation_weight", "shift", "num_workers",
                 "eval_every")
        greater_than(self, 0, "lr")
        check(self, ["zoom"], lambda v: 0 <= v < 1, "in [0, 1)")  # the zoom factor 1 - zoom stays positive
        check_adam_betas(self)

    def crop(self) -> CropConfig:
        # No box jitter at decode time: images are cached once; the zoom/shift augmentation replaces it.
        return CropConfig(img_size=self.image_size, padding=self.padding, jitter=0.0)


# -- datasets -------------------------------------------------------------------------------------

DatasetBuilder = Callable[[str, str, CropConfig], torch.utils.data.Dataset]


def _folder_split(data: str, split: str, crop: CropConfig):
    return FolderDataset(Path(data) / split, crop, require_camera=True)


def _cmr_reader(kind: str) -> DatasetBuilder:
    def build(data: str, split: str, crop: CropConfig):
        from ..data.datasets import open_dataset  # the CUB / PASCAL3D+ readers, with SfM cameras

        return open_dataset(data, crop, split=split, kind=kind)
    return build


# name -> builder(data root, split, crop) -> Dataset of Samples with cameras. The synthetic splits
# are in the folder format (their ground-truth cameras are its annotations).
CAMERA_DATASETS: dict[str, DatasetBuilder] = {"folder": _folder_split, "cub": _cmr_reader("cub"),
                                              "p3d": _cmr_reader("p3d")}


def register_camera_dataset(name: str, builder: DatasetBuilder) -> None:
    CAMERA_DATASETS[name] = builder


def camera_dataset(kind: str, data: str, split: str, crop: CropConfig) -> torch.utils.data.Dataset:
    if kind not in CAMERA_DATASETS:
        raise ValueError(f"camera.dataset {kind!r} has no reader; available: {sorted(CAMERA_DATASETS)} "
                         "(register one with meshinv.training.camera.register_camera_dataset)")
    return CAMERA_DATASETS[kind](data, split, crop)


@dataclass
class CachedSamples:
    """Decoded, cropped samples held in memory.

    images   (N, 3, S, S) uint8 (pixel value = round((x + 1) / 2 * 255) of the [-1, 1] image)
    cameras  (N, 7) float32 crop NDC cameras
    masks    (N, 1, S, S) bool, or None when not kept
    ids      image ids (file stems)
    """

    images: torch.Tensor
    cameras: torch.Tensor
    masks: Optional[torch.Tensor]
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, indices, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Images (B, 3, S, S) in [-1, 1], cameras (B, 7) and float masks (B, 1, S, S) (None when
        not kept) on `device`."""
        index = torch.as_tensor(indices, dtype=torch.long)
        images = self.images[index].to(device).float() * (2.0 / 255.0) - 1.0
        masks = self.masks[index].to(device).float() if self.masks is not None else None
        return images, self.cameras[index].to(device), masks


def _single(items: list) -> object:
    return items[0]


def cache_samples(dataset, keep_masks: bool = False, num_workers: int = 0, desc: str = "decode") -> CachedSamples:
    """Decode and crop every sample of `dataset` once (with `num_workers` processes)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=False, num_workers=num_workers,
                                         collate_fn=_single)
    images, cameras, masks, ids = [], [], [], []
    for sample in tqdm(loader, desc=desc, unit="img"):
        sample: Sample
        if sample.camera is None:
            raise DataError(f"{sample.source}: no camera annotation; camera training needs one per image")
        images.append(((sample.image + 1) * 127.5).round().clamp(0, 255).to(torch.uint8))
        cameras.append(sample.camera.float())
        if keep_masks:
            masks.append(sample.mask > 0.5)
        ids.append(sample.image_id)
    if not ids:
        raise DataError(f"{getattr(dataset, 'root', dataset)}: no images")
    return CachedSamples(torch.stack(images), torch.stack(cameras), torch.stack(masks) if keep_masks else None, ids)


# -- augmentation ---------------------------------------------------------------------------------

@dataclass
class Augmentation:
    """Per-image mirror flag (B,) bool, zoom factor (B,) and NDC shift (B, 2) (x right, y up)."""

    mirror: torch.Tensor
    zoom: torch.Tensor
    shift: torch.Tensor

    @classmethod
    def sample(cls, batch_size: int, generator: torch.Generator, mirror: bool = True, zoom: float = 0.0,
               shift: float = 0.0) -> "Augmentation":
        flips = torch.rand(batch_size, generator=generator) < 0.5
        zooms = 1 + zoom * (2 * torch.rand(batch_size, generator=generator) - 1)
        shifts = shift * (2 * torch.rand(batch_size, 2, generator=generator) - 1)
        return cls(flips & mirror, zooms, shifts)

    def images(self, images: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """Mirror, then zoom about the centre and shift, (B, C, H, W) images; `fill` outside."""
        mirror = self.mirror.to(images.device)[:, None, None, None]
        images = torch.where(mirror, images.flip(-1), images)
        if bool((self.zoom != 1).any() or (self.shift != 0).any()):
            k = self.zoom.to(images)
            a, b = self.shift.to(images).unbind(-1)
            # affine_grid maps output to input in grid coordinates (x right, y down):
            # g_in = (g_out - (a, -b)) / k, since NDC y is up.
            zero = torch.zeros_like(k)
            theta = torch.stack([torch.stack([1 / k, zero, -a / k], -1),
                                 torch.stack([zero, 1 / k, b / k], -1)], 1)
            grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # pixel centres, as ours
            images = F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros",
                                   align_corners=False) + fill
        return images

    def cameras(self, cameras: torch.Tensor) -> torch.Tensor:
        """The (B, 7) cameras of the augmented images."""
        cameras = torch.where(self.mirror.to(cameras.device)[:, None], mirror_ndc_camera(cameras), cameras)
        k = self.zoom.to(cameras)[:, None]
        a, b = self.shift.to(cameras).split(1, dim=-1)
        return torch.cat([k * cameras[:, :1], k * cameras[:, 1:2] + a, k * cameras[:, 2:3] - b, cameras[:, 3:]], dim=1)


# -- loss and metrics -----------------------------------------------------------------------------


def camera_loss(pred: torch.Tensor, target: torch.Tensor, rotation_weight: float = 1.0,
                scale_translation_weight: float = 1.0, rotation_loss: str = "quaternion",
                pred_rotation: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
    """CMR's camera loss of (B, 7) cameras (see the module docstring); `total` is the weighted sum.

    rotation_loss="matrix" replaces the quaternion term by the mean squared Frobenius distance of the
    rotation matrices, 8 sin^2(angle / 2): the same ordering of errors, the usual loss of a 6D head.
    It uses `pred_rotation` (B, 3, 3) when given (CameraPredictor.predict returns it), else the
    matrix of the predicted quaternion.
    """
    if rotation_loss == "quaternion":
        q = normalize_quaternion(pred[:, 3:])
        q_gt = normalize_quaternion(target[:, 3:])
        rotation = (1 - (q * q_gt).sum(-1).abs()).mean()
    elif rotation_loss == "matrix":
        if pred_rotation is None:
            pred_rotation = quaternion_to_matrix(normalize_quaternion(pred[:, 3:]))
        target_rotation = quaternion_to_matrix(normalize_quaternion(target[:, 3:]))
        rotation = ((pred_rotation - target_rotation) ** 2).sum((-2, -1)).mean()
    else:
        raise ValueError(f"rotation_loss must be one of {ROTATION_LOSSES}, got {rotation_loss!r}")
    squared = (pred[:, :3] - target[:, :3]) ** 2
    scale_translation = squared.mean()
    return {"total": rotation_weight * rotation + scale_translation_weight * scale_translation,
            "rotation": rotation, "scale_translation": scale_translation,
            "scale": squared[:, 0].mean().detach(), "translation": squared[:, 1:].mean().detach()}


def rotation_error_deg(q: torch.Tensor, q_gt: torch.Tensor) -> torch.Tensor:
    """(B,) geodesic angle between the rotations of (B, 4) quaternions, in degrees (q ~ -q)."""
    dot = (normalize_quaternion(q.double()) * normalize_quaternion(q_gt.double())).sum(-1).abs().clamp(max=1.0)
    return torch.rad2deg(2 * torch.acos(dot)).to(q.dtype)


def camera_errors(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image errors of (B, 7) cameras: rotation (degrees, geodesic), translation (NDC distance
    of (tx, ty), 1 = half the crop side) and scale (|s - s_gt| / s_gt)."""
    return {"rotation_error_deg": rotation_error_deg(pred[:, 3:], target[:, 3:]),
            "translation_error": (pred[:, 1:3] - target[:, 1:3]).norm(dim=-1),
            "scale_error": (pred[:, 0] - target[:, 0]).abs() / target[:, 0].abs().clamp(min=1e-8)}


def overlay_iou(cameras: torch.Tensor, masks: torch.Tensor, vertices: torch.Tensor, faces: torch.Tensor,
                renderer: Optional[Renderer] = None) -> torch.Tensor:
    """(B,) IoU of (B, 1, H, W) masks with the silhouette of one (V, 3) shape seen through (B, 7)
    cameras, rendered at the masks' resolution."""
    renderer = renderer or make_renderer(tuple(masks.shape[-2:]))
    vertices = vertices.to(cameras)[None].expand(cameras.shape[0], -1, -1)
    ndc = WeakPerspectiveCamera.from_tensor(cameras).transform(vertices)
    silhouette = renderer.rasterize(ndc, faces.to(cameras.device)).mask
    return mask_iou(silhouette[:, 0], masks.to(cameras.device)[:, 0]).float()


# -- the mean shape of the overlay IoU ---------------------------------------------------------------

@dataclass
class OverlayShape:
    """The shape whose silhouette scores a predicted camera: vertices (V, 3), faces (F, 3)."""

    vertices: torch.Tensor
    faces: torch.Tensor
    source: str

    def to_extra(self) -> dict:
        return {"overlay_vertices": self.vertices.detach().cpu().float(), "overlay_faces": self.faces.cpu().long(),
                "overlay_source": self.source}

    @classmethod
    def from_extra(cls, checkpoint: dict) -> Optional["OverlayShape"]:
        if "overlay_vertices" not in checkpoint:
            return None
        return cls(checkpoint["overlay_vertices"], checkpoint["overlay_faces"], str(checkpoint.get("overlay_source")))

    @classmethod
    def template(cls, template: MeshTemplate) -> "OverlayShape":
        return cls(template.vertices.cpu(), template.faces.cpu(), "template (undeformed)")


def load_mean_shape(path: str | Path, template: MeshTemplate) -> OverlayShape:
    """A mean shape from an .npz: `vertices` (V, 3) with optional `faces` (F, 3) (else the
    template's), or a `deformation_map` (3, H, W) of the template."""
    path = Path(path)
    try:
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the mean shape ({e})") from None
    if "vertices" in arrays:
        vertices = torch.from_numpy(arrays["vertices"]).float()
        faces = torch.from_numpy(arrays["faces"]).long() if "faces" in arrays else template.faces.cpu()
    elif "deformation_map" in arrays:
        with torch.no_grad():
            vertices = template.vertex_positions(torch.from_numpy(arrays["deformation_map"]).float()[None])[0].cpu()
        faces = template.faces.cpu()
    else:
        raise DataError(f"{path}: a mean shape needs `vertices` (V, 3) or `deformation_map` (3, H, W)")
    if vertices.dim() != 2 or vertices.shape[1] != 3 or int(faces.max()) >= vertices.shape[0]:
        raise DataError(f"{path}: vertices {tuple(vertices.shape)} do not fit faces indexing {int(faces.max()) + 1}")
    return OverlayShape(vertices, faces, str(path))


def ground_truth_mean_shape(gt_dir: Path, template: MeshTemplate) -> Optional[OverlayShape]:
    """Mean of the ground-truth vertices (synthetic data: <split>/gt/*.npz), or None if absent
    or not on this template."""
    paths = sorted(gt_dir.glob("*.npz")) if gt_dir.is_dir() else []
    if not paths:
        return None
    total = None
    for path in paths:
        with np.load(path) as gt:
            if "vertices" not in gt.files:
                return None
            vertices = gt["vertices"].astype(np.float64)
        if vertices.shape != (template.num_vertices, 3):
            log.warning("%s: %d ground-truth vertices, but the template has %d: mean shape not used",
                        path, vertices.shape[0], template.num_vertices)
            return None
        total = vertices if total is None else total + vertices
    mean = torch.from_numpy(total / len(paths)).float()
    return OverlayShape(mean, template.faces.cpu(), f"mean ground-truth shape of {len(paths)} images in {gt_dir}")


def overlay_shape_for(cfg: CameraTrainConfig, dataset, template: MeshTemplate) -> OverlayShape:
    """The configured mean_shape file; else the dataset's SfM mean shape (CUB / PASCAL3D+ readers
    expose `mean_shape` (K, 3) and its hull `mean_shape_faces`); else the mean ground-truth shape
    of a synthetic split; else the undeformed template."""
    if cfg.mean_shape:
        return load_mean_shape(cfg.mean_shape, template)
    vertices, faces = getattr(dataset, "mean_shape", None), getattr(dataset, "mean_shape_faces", None)
    if isinstance(vertices, torch.Tensor) and isinstance(faces, torch.Tensor):
        return OverlayShape(vertices.float(), faces.long(), f"SfM mean shape of {cfg.data} ({cfg.train_split})")
    return (ground_truth_mean_shape(Path(cfg.data) / cfg.train_split / "gt", template)
            or OverlayShape.template(template))


# -- prediction -----------------------------------------------------------------------------------

@torch.no_grad()
def predict_cameras(model: CameraPredictor, dataset, device: torch.device, batch_size: int = 32,
                    shape: Optional[OverlayShape] = None, num_workers: int = 0) -> dict[str, dict]:
    """Predict the camera of every Sample of `dataset`, in the original's `cmr_pred_cam.pth` format:
    {image_id: {"pred_cam": (7,) float32 tensor [s, tx, ty, qw, qx, qy, qz],
                "pred_pose_overlay_iou": float}}.

    The IoU compares each sample's mask with the silhouette of `shape` (default: the 16-ring
    template sphere) under the predicted camera, at the sample's crop resolution.
    """
    if shape is None:
        shape = OverlayShape.template(build_template(TemplateConfig()))
    model = model.to(device).eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         collate_fn=list)
    renderer = None
    out: dict[str, dict] = {}
    for samples in tqdm(loader, desc="predict cameras", unit="batch"):
        images = torch.stack([s.image for s in samples]).to(device)
        masks = torch.stack([s.mask for s in samples]).to(device)
        cameras = model(images, masks)
        if renderer is None or renderer.image_size != tuple(masks.shape[-2:]):
            renderer = make_renderer(tuple(masks.shape[-2:]))
        ious = overlay_iou(cameras, masks, shape.vertices.to(device), shape.faces.to(device), renderer)
        for sample, camera, iou in zip(samples, cameras.cpu(), ious.cpu()):
            if sample.image_id in out:
                raise DataError(f"{sample.source}: image id {sample.image_id!r} appears twice")
            out[sample.image_id] = prediction_entry(camera, iou)
    return out


@torch.no_grad()
def evaluate_predictor(model: CameraPredictor, data: CachedSamples, device: torch.device, batch_size: int = 32,
                       shape: Optional[OverlayShape] = None) -> dict[str, float]:
    """Median (and mean) rotation, translation and scale errors on held-out cached samples; with
    masks and a shape, also the overlay IoU of predicted and of ground-truth cameras."""
    was_training = model.training
    model.eval()
    preds = []
    for start in range(0, len(data), batch_size):
        images, _, masks = data.batch(range(start, min(start + batch_size, len(data))), device)
        preds.append(model(images, masks).cpu())
    model.train(was_training)
    pred = torch.cat(preds)
    errors = camera_errors(pred, data.cameras)
    result: dict[str, float] = {"images": len(data)}
    for name, values in errors.items():
        result[f"{name}_median"] = float(values.median())
        result[f"{name}_mean"] = float(values.mean())
    result["rotation_within_30deg"] = float((errors["rotation_error_deg"] < 30).float().mean())
    if data.masks is not None and shape is not None:
        renderer = make_renderer(tuple(data.masks.shape[-2:]))
        for name, cameras in (("pred", pred), ("gt", data.cameras)):
            ious = torch.cat([overlay_iou(cameras[i:i + batch_size].to(device), data.masks[i:i + batch_size],
                                          shape.vertices.to(device), shape.faces.to(device), renderer).cpu()
                              for i in range(0, len(data), batch_size)])
            result[f"overlay_iou_{name}_mean"] = float(ious.mean())
            result[f"overlay_iou_{name}_above_{TRUSTED_IOU}"] = float((ious > TRUSTED_IOU).float().mean())
    return result


# -- the training loop ----------------------------------------------------------------------------

def scheduled_lr(cfg: CameraTrainConfig, iteration: int) -> float:
    """The learning rate of step `iteration` (0-based). Cosine decay runs over max_steps, so a run
    resumed with another max_steps continues on the new schedule."""
    if cfg.lr_decay == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(iteration, cfg.max_steps) / cfg.max_steps))
    return cfg.lr


class CameraTrainer:
    """The predictor, its optimiser, the cached data and the loop state of one training run."""

    def __init__(self, cfg: CameraTrainConfig, template_cfg: TemplateConfig, device: torch.device,
                 experiment: Optional[dict] = None, load_pretrained: bool = True):
        self.cfg, self.device = cfg, torch.device(device)
        self.out_dir = Path(cfg.out_dir)
        self.experiment = experiment or {}
        crop = cfg.crop()
        train_set = camera_dataset(cfg.dataset, cfg.data, cfg.train_split, crop)
        self.train_data = cache_samples(train_set, keep_masks=cfg.masked_input, num_workers=cfg.num_workers,
                                        desc=f"decode {cfg.train_split}")
        if len(self.train_data) < cfg.batch_size:
            raise ValueError(f"{Path(cfg.data) / cfg.train_split}: {len(self.train_data)} images, fewer than "
                             f"camera.batch_size {cfg.batch_size}")
        self.eval_data = None
        if cfg.eval_split:
            self.eval_data = cache_samples(camera_dataset(cfg.dataset, cfg.data, cfg.eval_split, crop),
                                           keep_masks=True, num_workers=cfg.num_workers,
                                           desc=f"decode {cfg.eval_split}")
        self.shape = overlay_shape_for(cfg, train_set, build_template(template_cfg))
        log.info("overlay IoU shape: %s", self.shape.source)

        torch.manual_seed(cfg.seed)  # the heads' initialisation
        self.model = CameraPredictor(cfg.image_size, cfg.feature_dim, pretrained_trunk=cfg.pretrained_trunk and
                                     load_pretrained, allow_random_trunk=cfg.allow_random_trunk,
                                     rotation_head=cfg.rotation_head, masked_input=cfg.masked_input,
                                     background=2 * crop.image_fill - 1).to(self.device)
        self.trunk_initialisation = self.model.trunk_initialisation
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
        self.batches_per_epoch = len(self.train_data) // cfg.batch_size  # the last partial batch is dropped
        self.iteration = 0
        self.history: list[dict] = []

    # -- data order ------------------------------------------------------------------------------------
    def batch_indices(self, iteration: int) -> list[int]:
        epoch, position = divmod(iteration, self.batches_per_epoch)
        order = epoch_order(len(self.train_data), self.cfg.seed, epoch)
        return order[position * self.cfg.batch_size:(position + 1) * self.cfg.batch_size].tolist()

    def augmentation(self, iteration: int) -> Augmentation:
        generator = torch.Generator().manual_seed(self.cfg.seed * 1000003 + iteration + 1)
        return Augmentation.sample(self.cfg.batch_size, generator, self.cfg.mirror, self.cfg.zoom, self.cfg.shift)

    # -- checkpoints -------------------------------------------------------------------------------------
    def extra(self) -> dict:
        return {"iteration": self.iteration, "config": {"camera": to_dict(self.cfg), **self.experiment},
                "trunk_initialisation": self.trunk_initialisation, **self.shape.to_extra()}

    def save(self, path: Path) -> None:
        save_camera_predictor(path, self.model, {**self.extra(), "optimizer": self.optimizer.state_dict(),
                                                 "history": self.history})

    def resume(self, path: Path) -> None:
        checkpoint = read_training_checkpoint(path, ["model", "optimizer", "iteration"], "camera training")
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.iteration = int(checkpoint["iteration"])
        self.history = list(checkpoint.get("history", []))
        self.trunk_initialisation = checkpoint.get("trunk_initialisation", self.trunk_initialisation)
        log.info("resumed from %s at iteration %d", path, self.iteration)

    # -- steps -------------------------------------------------------------------------------------------
    def step(self, iteration: int) -> dict[str, torch.Tensor]:
        """One optimisation step on batch `iteration` (augmented)."""
        cfg = self.cfg
        images, cameras, masks = self.train_data.batch(self.batch_indices(iteration), self.device)
        augmentation = self.augmentation(iteration)
        # Outside the original photo CMR fills with white; zoomed-out borders do the same.
        images = augmentation.images(images, fill=2 * cfg.crop().image_fill - 1)
        if masks is not None:
            masks = augmentation.images(masks, fill=0.0)
        targets = augmentation.cameras(cameras)
        set_lr(self.optimizer, self.learning_rate(iteration))
        self.optimizer.zero_grad(set_to_none=True)
        pred, rotation = self.model.predict(images, masks)
        losses = camera_loss(pred, targets, cfg.rotation_weight, cfg.scale_translation_weight, cfg.rotation_loss,
                             pred_rotation=rotation)
        losses["total"].backward()
        self.optimizer.step()
        return {k: v.detach() for k, v in losses.items()}

    def learning_rate(self, iteration: int) -> float:
        return scheduled_lr(self.cfg, iteration)

    def evaluate(self) -> Optional[dict[str, float]]:
        if self.eval_data is None:
            return None
        return evaluate_predictor(self.model, self.eval_data, self.device, self.cfg.eval_batch_size, self.shape)

    # -- the loop ----------------------------------------------------------------------------------------
    def run(self) -> dict:
        from torch.utils.tensorboard import SummaryWriter

        cfg = self.cfg
        writer = SummaryWriter(str(self.out_dir / "tensorboard"))
        bar = tqdm(total=cfg.max_steps, initial=self.iteration, desc="train camera", unit="it")
        running: dict[str, float] = {}
        start_time, start_iteration = time.perf_counter(), self.iteration
        self.model.train()
        while self.iteration < cfg.max_steps:
            losses = self.step(self.iteration)
            for name, value in losses.items():
                running[name] = finite_loss(f"camera loss {name}", value, self.iteration, self.out_dir / LATEST)
            self.iteration += 1
            bar.update(1)
            it = self.iteration
            if it % cfg.log_every == 0:
                bar.set_postfix(loss=f"{running['total']:.4f}")
                for name, value in running.items():
                    writer.add_scalar(f"loss/{name}", value, it)
                writer.add_scalar("lr", self.learning_rate(it - 1), it)
            if cfg.eval_every and it % cfg.eval_every == 0 and it < cfg.max_steps:
                self._record_evaluation(writer, it)
            if it % cfg.checkpoint_every == 0 or it == cfg.max_steps:
                self.save(self.out_dir / LATEST)
        bar.close()
        seconds = time.perf_counter() - start_time
        evaluation = self._record_evaluation(writer, self.iteration)
        writer.close()
        save_camera_predictor(self.out_dir / FINAL, self.model, self.extra())
        summary = {**timing_summary(self.iteration, self.batches_per_epoch, seconds, start_iteration),
                   "losses": running, "trunk_initialisation": self.trunk_initialisation,
                   "overlay_shape": self.shape.source, "train_images": len(self.train_data),
                   "evaluation_split": cfg.eval_split, "evaluation": evaluation, "checkpoint": str(self.out_dir / FINAL)}
        save_json(self.out_dir / "summary.json", summary)
        return summary

    def _record_evaluation(self, writer, iteration: int) -> Optional[dict[str, float]]:
        result = self.evaluate()
        if result is None:
            return None
        for name, value in result.items():
            if name != "images":
                writer.add_scalar(f"eval/{name}", value, iteration)
        if not self.history or self.history[-1]["iteration"] != iteration:
            self.history.append({"iteration": iteration, **result})
        log.info("iteration %d, %s: median rotation error %.2f deg, translation %.4f, scale %.4f", iteration,
                 self.cfg.eval_split, result["rotation_error_deg_median"], result["translation_error_median"],
                 result["scale_error_median"])
        return result


def train_camera(cfg: CameraTrainConfig, template_cfg: TemplateConfig, device: torch.device,
                 resume: bool = False, experiment: Optional[dict] = None) -> dict:
    """Train the camera predictor as configured; returns the summary (also <out_dir>/summary.json).

    Writes <out_dir>/checkpoint-latest.pt (full state, every `checkpoint_every` steps),
    camera_predictor.pt (the model, for load_camera_predictor / scripts/predict_cameras.py),
    tensorboard/ and summary.json (final held-out errors). The settings are validated first;
    scripts/train_camera.py guards the folder with `prepare_run_folder` before calling this.
    """
    validate_config(cfg, "camera")
    validate_config(template_cfg, "template")
    latest = Path(cfg.out_dir) / LATEST
    resuming = resume and latest.is_file()
    if resume and not resuming:
        log.info("no checkpoint at %s: starting from scratch", latest)
    # A resumed run takes its trunk from the checkpoint: no ImageNet file needed.
    trainer = CameraTrainer(cfg, template_cfg, device, experiment, load_pretrained=not resuming)
    if resuming:
        trainer.resume(latest)
    return trainer.run()
