"""CMR / ConvMesh preprocessing: bounding box, padding, square crop, resize, mirroring, with the
camera kept consistent at every step (docs/method.md sections 2 and 9).

Coordinates are continuous pixel coordinates (see meshinv.data.sample): boxes are (x0, y0, x1, y1)
with x1, y1 exclusive, so a box covering pixel columns 3..7 is x0 = 3, x1 = 8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..geometry.camera import quaternion_to_matrix
from ..utils.config import at_least, within
from .sample import DataError, PixelCamera


@dataclass
class CropConfig:
    """How an image is cropped around its object."""

    img_size: int = 256          # side of the square crop after resizing
    padding: float = 0.05        # the box grows by this fraction of its size on each side
    jitter: float = 0.0          # random box jitter, as a fraction of its size (CMR trains with 0.05)
    mask_threshold: float = 0.5  # resized masks are binarised at this value
    image_fill: float = 1.0      # value (in [0, 1]) outside the original image (CMR: 1, white)

    def validate(self) -> None:
        at_least(self, 1, "img_size")
        at_least(self, 0, "padding", "jitter")
        within(self, 0, 1, "mask_threshold", "image_fill")


def bbox_from_mask(mask: np.ndarray, name: str = "mask") -> tuple[float, float, float, float]:
    """Tight box (x0, y0, x1, y1) around the nonzero pixels of an (H, W) mask."""
    rows = np.nonzero(mask.any(axis=1))[0]
    cols = np.nonzero(mask.any(axis=0))[0]
    if len(rows) == 0:
        raise DataError(f"{name}: the mask is empty (no foreground pixel)")
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def square_crop_box(bbox, padding: float = 0.05, jitter: float = 0.0,
                    rng: Optional[np.random.Generator] = None) -> tuple[int, int, int]:
    """Pad (and optionally jitter) a box, then make it square around its centre.

    Returns (x0, y0, side) in whole pixels: the crop covers columns x0 .. x0 + side - 1 and rows
    y0 .. y0 + side - 1, possibly beyond the image (filled when cropping).
    """
    x0, y0, x1, y1 = (float(v) for v in bbox)
    width, height = x1 - x0, y1 - y0
    if width <= 0 or height <= 0:
        raise DataError(f"degenerate bounding box {bbox}")
    if jitter > 0:
        rng = rng or np.random.default_rng()
        x0 += (2 * rng.random() - 1) * jitter * width
        x1 += (2 * rng.random() - 1) * jitter * width
        y0 += (2 * rng.random() - 1) * jitter * height
        y1 += (2 * rng.random() - 1) * jitter * height
    x0, x1 = x0 - padding * width, x1 + padding * width
    y0, y1 = y0 - padding * height, y1 + padding * height
    side = max(int(math.ceil(max(x1 - x0, y1 - y0))), 1)
    left = int(round((x0 + x1) / 2 - side / 2))
    top = int(round((y0 + y1) / 2 - side / 2))
    return left, top, side


def crop_square(array: np.ndarray, left: int, top: int, side: int, fill: float) -> np.ndarray:
    """The side x side window at (left, top) of an (H, W[, C]) array, `fill` outside it."""
    height, width = array.shape[:2]
    out = np.full((side, side) + array.shape[2:], fill, dtype=array.dtype)
    src_x0, src_y0 = max(left, 0), max(top, 0)
    src_x1, src_y1 = min(left + side, width), min(top + side, height)
    if src_x1 > src_x0 and src_y1 > src_y0:
        out[src_y0 - top:src_y1 - top, src_x0 - left:src_x1 - left] = array[src_y0:src_y1, src_x0:src_x1]
    return out


def resize_square(array: np.ndarray, size: int) -> np.ndarray:
    """Resize an (S, S[, C]) float array to (size, size[, C]) with pixel centres aligned
    (continuous coordinates scale by size / S), antialiased when shrinking."""
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    tensor = tensor[None, None] if tensor.dim() == 2 else tensor.permute(2, 0, 1)[None]
    if tensor.shape[-1] != size:
        tensor = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False,
                               antialias=tensor.shape[-1] > size)
    out = tensor[0].permute(1, 2, 0).numpy()
    return out[..., 0] if array.ndim == 2 else out


def camera_to_crop_ndc(camera: PixelCamera, left: int, top: int, side: int, size: int) -> torch.Tensor:
    """Pixel camera of the full image -> (7,) NDC camera of the crop resized to size x size."""
    factor = size / side
    scale = camera.scale * factor
    tx = (camera.translation[0] - left) * factor
    ty = (camera.translation[1] - top) * factor
    return torch.tensor([2 * scale / size, 2 * tx / size - 1, 2 * ty / size - 1, *camera.quaternion],
                        dtype=torch.float32)


def mirror_ndc_camera(camera: torch.Tensor) -> torch.Tensor:
    """NDC camera (..., 7) of the horizontally mirrored image of a mirror-symmetric object:
    R' = diag(-1, 1, 1) R diag(-1, 1, 1), i.e. q -> (w, x, -y, -z), and tx -> -tx
    (= W - tx in continuous pixels, the original's W - tx - 1 with integer centres; docs/method.md section 2)."""
    sign = camera.new_tensor([1.0, -1.0, 1.0, 1.0, 1.0, -1.0, -1.0])
    return camera * sign


def _scaled_rotation(vertices: torch.Tensor, camera: PixelCamera) -> torch.Tensor:
    """s R(q) v for (V, 3) object points."""
    rotation = quaternion_to_matrix(torch.tensor(camera.quaternion, dtype=vertices.dtype))
    return camera.scale * (vertices @ rotation.T)


def project_pixels(vertices: torch.Tensor, camera: PixelCamera) -> torch.Tensor:
    """(V, 3) object points -> (V, 2) continuous pixel coordinates (x right, y down)."""
    return _scaled_rotation(vertices, camera)[:, :2] + torch.tensor(camera.translation, dtype=vertices.dtype)


def pixel_camera_to_ndc_vertices(vertices: torch.Tensor, camera: PixelCamera, height: int, width: int) -> torch.Tensor:
    """(V, 3) object points -> (V, 3) renderer NDC for an H x W image seen by a pixel camera.

    x_ndc = 2 x / W - 1, y_ndc = 1 - 2 y / H; z_ndc = -s (R v)_z scaled like x (larger = nearer).
    """
    rotated = _scaled_rotation(vertices, camera)
    x = 2 * (rotated[:, 0] + camera.translation[0]) / width - 1
    y = 1 - 2 * (rotated[:, 1] + camera.translation[1]) / height
    return torch.stack([x, y, -2 * rotated[:, 2] / width], dim=-1)


def crop_sample(image: np.ndarray, mask: np.ndarray, bbox, camera: Optional[PixelCamera], cfg: CropConfig,
                rng: Optional[np.random.Generator] = None, mirror: bool = False, name: str = "image"):
    """Crop an image and its mask around `bbox` (or the mask's box when None) as CMR does.

    image (H, W, 3) float in [0, 1]; mask (H, W) float in [0, 1]. Returns (image (3, S, S) in
    [-1, 1], mask (1, S, S) in {0, 1}, NDC camera (7,) or None, crop box (left, top, side)).
    """
    if bbox is None:
        bbox = bbox_from_mask(mask > 0.5, f"{name} (mask)")
    left, top, side = square_crop_box(bbox, cfg.padding, cfg.jitter, rng)
    image = resize_square(crop_square(image, left, top, side, cfg.image_fill), cfg.img_size)
    mask = resize_square(crop_square(mask.astype(np.float32), left, top, side, 0.0), cfg.img_size)
    image_t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).clamp(0, 1) * 2 - 1
    mask_t = torch.from_numpy((mask > cfg.mask_threshold).astype(np.float32))[None]
    camera_t = camera_to_crop_ndc(camera, left, top, side, cfg.img_size) if camera is not None else None
    if mirror:
        image_t, mask_t = image_t.flip(-1), mask_t.flip(-1)
        camera_t = mirror_ndc_camera(camera_t) if camera_t is not None else None
    return image_t, mask_t, camera_t, (left, top, side)
