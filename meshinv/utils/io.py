"""Atomic file output: a reader never sees a half-written file, a killed job never leaves one."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def save_json(path: str | os.PathLike, data: Any) -> None:
    save_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Save an (H, W), (H, W, 3) or (H, W, 4) array; floats are taken as [0, 1]."""
    from PIL import Image

    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    suffix = Path(path).suffix.lower().lstrip(".")
    fmt = {"jpg": "JPEG", "jpeg": "JPEG"}.get(suffix, suffix.upper() or "PNG")
    with atomic_write(path, "wb") as f:
        Image.fromarray(image).save(f, format=fmt)


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    import torch

    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def save_npz(path: str | os.PathLike, **arrays: Any) -> None:
    """Save arrays as a compressed, pickle-free .npz (atomically)."""
    with atomic_write(path, "wb") as f:
        np.savez_compressed(f, **{k: np.asarray(v) for k, v in arrays.items()})
