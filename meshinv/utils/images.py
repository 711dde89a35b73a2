"""The one reader of image files, and conversions between our image tensors ([-1, 1], (C, H, W)) and files.

Every image and mask the project reads goes through read_image / read_mask here, so that what
they accept and refuse is decided once:

- 8-bit and 16-bit files of every Pillow mode are scaled to [0, 1] by their format's maximum
  (65535 for 16-bit; Pillow opens 16-bit grey PNGs as "I;16..." or "I", which a plain RGB
  conversion would clip to white). 16-bit colour PNGs arrive as 8-bit RGB(A) from Pillow.
- Photos: grey and palette images become RGB (the grey value in all three channels), CMYK and
  other colour spaces are converted to RGB, and transparent pixels are composited over white (what
  a viewer shows, and the crop's fill outside the image, CropConfig.image_fill).
- Masks: the grey value (luminance of a colour file); above half the maximum is the object.
- Refused with a DataError that names the file: a missing, unreadable, truncated or damaged file,
  an image with no pixels, a float or 32-bit integer image outside [0, 1] / 0..65535, and an image
  of more than MAX_IMAGE_PIXELS pixels.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from typing import Iterator, Optional

import numpy as np
import torch

from .errors import DataError
from .io import save_image

log = logging.getLogger(__name__)

# The largest image read, in pixels: 64 Mpx (e.g. 8192 x 8192), whose float32 RGB copy alone takes
# 768 MiB. Larger images are refused rather than downscaled, because annotation cameras and boxes and
# user masks are in the original's pixel coordinates: a silently downscaled image would not match them.
# Pillow's own decompression-bomb check (which raises above twice its MAX_IMAGE_PIXELS) is reported
# the same way.
MAX_IMAGE_PIXELS = 64 * 1024 * 1024

_SIXTEEN_BIT_MAX = 65535.0


@contextlib.contextmanager
def _opened(path: str | os.PathLike, what: str, max_pixels: Optional[int], decode: bool = True) -> Iterator:
    """The Pillow image of `path`, size-checked before its pixels are decoded (and decoded when
    `decode`); every failure is a DataError naming the file. max_pixels None: MAX_IMAGE_PIXELS."""
    from PIL import Image

    max_pixels = MAX_IMAGE_PIXELS if max_pixels is None else max_pixels

    try:
        with warnings.catch_warnings():
            # Pillow warns above its own limit; ours is lower and refuses such images below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except FileNotFoundError:
        raise DataError(f"{path}: {what} file not found") from None
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: {what} too large to read ({e}); meshinv reads images of up to "
                        f"{max_pixels} pixels (meshinv.utils.images.MAX_IMAGE_PIXELS): downscale it, with its "
                        "mask and annotations") from None
    except Exception as e:  # noqa: BLE001 -- Pillow reports bad files as OSError, SyntaxError, ValueError...
        raise DataError(f"{path}: cannot read {what} ({type(e).__name__}: {e})") from None
    with image:
        width, height = image.size
        if width * height == 0:
            raise DataError(f"{path}: {what} has no pixels ({width}x{height})")
        if width * height > max_pixels:
            raise DataError(f"{path}: {what} is {width}x{height} ({width * height / 1e6:.0f} Mpx), more than the "
                            f"{max_pixels / 1e6:.0f} Mpx meshinv reads (meshinv.utils.images.MAX_IMAGE_PIXELS): "
                            "downscale it, with its mask and annotations")
        if decode:
            try:
                image.load()
            except Exception as e:  # noqa: BLE001 -- truncated and corrupt data fail in several ways
                raise DataError(f"{path}: cannot read {what}: damaged or truncated file "
                                f"({type(e).__name__}: {e})") from None
        yield image


def _wide_grey(image, path, what: str) -> np.ndarray | None:
    """(H, W) float32 in [0, 1] for the modes a plain 8-bit conversion would clip (16-bit, 32-bit
    integer and float grey); None for every other mode."""
    mode = image.mode
    if mode.startswith("I;16"):
        return np.asarray(image).astype(np.float32) / _SIXTEEN_BIT_MAX
    if mode == "I":  # 32-bit signed; older Pillows open 16-bit grey PNGs in this mode
        values = np.asarray(image)
        if values.min() < 0 or values.max() > _SIXTEEN_BIT_MAX:
            raise DataError(f"{path}: {what} is a 32-bit integer image with values {values.min()}..{values.max()}; "
                            "meshinv reads 8- and 16-bit images (values 0..65535)")
        return values.astype(np.float32) / _SIXTEEN_BIT_MAX
    if mode == "F":
        values = np.asarray(image, dtype=np.float32)
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise DataError(f"{path}: {what} is a float image with values outside [0, 1] (or NaN); "
                            "meshinv reads float images in [0, 1] only")
        return values
    return None


def read_image(path: str | os.PathLike, max_pixels: Optional[int] = None) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] from any photo file (see the module doc for modes and refusals)."""
    with _opened(path, "image", max_pixels) as image:
        grey = _wide_grey(image, path, "image")
        if grey is not None:
            log.debug("%s: %s image, grey value copied to R, G and B", path, image.mode)
            return np.repeat(grey[..., None], 3, axis=2)
        if image.mode in ("L", "1", "P", "LA", "PA", "La"):
            log.debug("%s: %s image converted to RGB", path, image.mode)
        if "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info:
            rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
            alpha = rgba[..., 3:]
            return np.ascontiguousarray(rgba[..., :3] * alpha + (1.0 - alpha))  # over white
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def read_mask(path: str | os.PathLike, shape: tuple[int, int] | None = None,
              max_pixels: Optional[int] = None) -> np.ndarray:
    """(H, W) float32 in {0, 1} from any single- or multi-channel image: 1 where its grey value is
    above half the format's maximum. With `shape` (H, W), a mask of another size is an error."""
    with _opened(path, "mask", max_pixels) as image:
        grey = _wide_grey(image, path, "mask")
        if grey is None:
            grey = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    if shape is not None and grey.shape != tuple(shape):
        raise DataError(f"{path}: mask is {grey.shape[1]}x{grey.shape[0]} but its image is {shape[1]}x{shape[0]}")
    return (grey > 0.5).astype(np.float32)


def image_shape(path: str | os.PathLike, max_pixels: Optional[int] = None) -> tuple[int, int]:
    """(H, W) of an image file, read from its header (no pixels decoded); refused like read_image."""
    with _opened(path, "image", max_pixels, decode=False) as image:
        return image.height, image.width


def read_image_tensor(path: str | os.PathLike, max_pixels: Optional[int] = None) -> torch.Tensor:
    """(3, H, W) float32 in [-1, 1] (our image convention) from any photo file."""
    return torch.from_numpy(read_image(path, max_pixels)).permute(2, 0, 1) * 2 - 1


def to_numpy_image(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H, W, C) float array in [0, 1] (C = 1 gives (H, W))."""
    array = ((image.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    return array[..., 0] if array.shape[-1] == 1 else array


def save_grid(path: str | os.PathLike, images: torch.Tensor, nrow: int = 8, padding: int = 2) -> None:
    """Save (N, C, H, W) images in [-1, 1] as one PNG grid (atomically)."""
    from torchvision.utils import make_grid

    grid = make_grid(images.detach().float().cpu(), nrow=nrow, padding=padding, pad_value=1.0)
    save_image(path, to_numpy_image(grid))
