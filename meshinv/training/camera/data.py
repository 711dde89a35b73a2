"""The camera trainer's data: its datasets (through the one factory, meshinv.data.datasets), the
in-memory cache of decoded crops, and the augmentation that changes image and camera together.

Augmentation, applied to image and camera together so that the target stays exact: horizontal
mirroring (`mirror_ndc_camera`: q -> (w, x, -y, -z), tx -> -tx; the objects are mirror-symmetric)
and a small zoom and shift of the crop (x' = k x + a, y' = k y + b in NDC gives s' = k s,
tx' = k tx + a, ty' = k ty - b, since NDC y = -(camera y)).

Every image is decoded and cropped once, at the training size, into memory (uint8), so the loop
is not I/O bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ...data.datasets import open_dataset
from ...data.preprocess import CropConfig, mirror_ndc_camera
from ...data.sample import DataError, Sample


def camera_dataset(kind: str, data: str, split: str, crop: CropConfig) -> torch.utils.data.Dataset:
    """The `split` of the dataset at `data` read as `kind` (meshinv.data.datasets.open_dataset); a
    DataError naming it when its samples do not all carry a camera (its `.info.has_cameras`)."""
    dataset = open_dataset(data, crop, split=split, kind=kind)
    if not dataset.info.has_cameras:
        raise DataError(f"{data} (split {split}, read as camera.dataset {kind!r}): not every image has a camera, "
                        "and camera training regresses one per image (a folder needs a camera in annotations.json "
                        "for each image)")
    return dataset


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
