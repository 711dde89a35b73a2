"""Atomic file output: a reader never sees a half-written file, a killed job never leaves one."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np

log = logging.getLogger(__name__)

# atomic_write's temporary files: `.<name>.<8 random characters of mkstemp>.tmp` beside the target.
_TEMP_PREFIX, _TEMP_SUFFIX = ".", ".tmp"
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{_TEMP_PREFIX}{path.name}.", suffix=_TEMP_SUFFIX, dir=path.parent)
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


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that atomic_write left under `folder` (at any depth) when its
    process was killed mid-write; returns them. Only for a folder no one else is writing into
    (a live writer's temporary file would go too)."""
    folder = Path(folder)
    stale = [p for p in folder.rglob(f"{_TEMP_PREFIX}*{_TEMP_SUFFIX}") if p.is_file() and _TEMP_NAME.match(p.name)]
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    if stale:
        log.info("removed %d temporary file(s) left by a killed run in %s", len(stale), folder)
    return stale


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's content (read in 1 MiB blocks)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def _finite_or_none(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _finite_or_none(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite_or_none(v) for v in data]
    if isinstance(data, (float, np.floating)):
        return float(data) if math.isfinite(data) else None
    if isinstance(data, np.integer):
        return int(data)
    return data


def json_text(data: Any, **options: Any) -> str:
    """Strict JSON (RFC 8259): NaN and infinities, which JSON has no words for, are written as null
    ("no finite value"); numpy scalars as numbers. Options go to json.dumps."""
    return json.dumps(_finite_or_none(data), allow_nan=False, **options)


def save_json(path: str | os.PathLike, data: Any) -> None:
    """Write `data` as strict JSON (json_text: a non-finite number becomes null), atomically."""
    save_text(path, json_text(data, indent=2, sort_keys=True) + "\n")


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
