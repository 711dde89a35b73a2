"""FID statistics: the Gaussian statistics of Inception activations, their .npz file (ours and the
original's), and the FID between two of them. The mathematics is meshinv/utils/frechet.py's.

    FIDStatistics          mean / covariance of activations; .npz round trip in the original's format
    fid(a, b)              Frechet distance between two FIDStatistics
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ...utils.frechet import frechet_distance, gaussian_statistics
from ...utils.io import atomic_write, json_text
from .inception import INCEPTION_SIZE

ORIGINAL_STATS_FILE = "precomputed_fid_299x299_testval.npz"
ORIGINAL_STATS_NETWORK = "torchvision"   # what ConvMesh made its statistics files with


@dataclass
class FIDStatistics:
    """Gaussian statistics of N activations (N, D): mean mu (D,), covariance sigma (D, D) (np.cov,
    ddof 1), and, when built from activations, their centred factor A (D, N) / sqrt(N - 1) with
    sigma = A A^T, which makes the distance to anything exact and fast when N < D."""

    mu: np.ndarray
    sigma: np.ndarray
    num_images: int
    resolution: int = INCEPTION_SIZE
    info: dict = field(default_factory=dict)    # network, dataset, split, background, ...
    factor: Optional[np.ndarray] = field(default=None, repr=False)

    @classmethod
    def from_activations(cls, activations: np.ndarray, resolution: int = INCEPTION_SIZE, **info) -> "FIDStatistics":
        x = np.asarray(activations)
        if x.ndim == 2 and x.shape[0] < 2:
            raise ValueError(f"FID needs at least 2 images, got {x.shape[0]}")
        mu, sigma, factor = gaussian_statistics(x)
        return cls(mu, sigma, int(x.shape[0]), int(resolution), dict(info), factor)

    @property
    def network(self) -> Optional[str]:
        return self.info.get("network")

    def save(self, path: str | os.PathLike) -> None:
        """The original's .npz layout (stats_m, stats_s = tril(cov) float32, num_images, resolution)
        plus `info` as JSON; written atomically."""
        with atomic_write(path, "wb") as f:
            np.savez_compressed(f, stats_m=self.mu, stats_s=np.tril(self.sigma).astype(np.float32),
                                num_images=np.int64(self.num_images), resolution=np.int64(self.resolution),
                                info=np.array(json_text(self.info, sort_keys=True)))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FIDStatistics":
        """Read an .npz written by save() or by the original (ConvMesh). A file without `info` is
        taken to be the original's, made with torchvision's Inception."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"FID statistics file not found: {path}")
        with np.load(path, allow_pickle=False) as data:
            missing = {"stats_m", "stats_s"} - set(data.files)
            if missing:
                raise ValueError(f"{path} is not an FID statistics file (no {', '.join(sorted(missing))}; "
                                 f"has {', '.join(data.files)})")
            mu, stored = data["stats_m"].astype(np.float64), data["stats_s"].astype(np.float64)
            num_images = int(data["num_images"]) if "num_images" in data.files else -1
            resolution = int(data["resolution"]) if "resolution" in data.files else INCEPTION_SIZE
            info = json.loads(str(data["info"])) if "info" in data.files else {
                "network": ORIGINAL_STATS_NETWORK, "source": "original (ConvMesh)"}
        if mu.ndim != 1 or stored.shape != (mu.size, mu.size):
            raise ValueError(f"{path}: stats_m {mu.shape} and stats_s {stored.shape} do not fit together")
        return cls(mu, full_covariance(stored), num_images, resolution, info)


def full_covariance(stored: np.ndarray) -> np.ndarray:
    """The symmetric covariance from a stored half: the original keeps np.tril(cov), whose full matrix
    is s + triu(s.T, 1); an upper half or a full matrix is accepted too."""
    if not np.any(np.triu(stored, 1)):
        return stored + np.triu(stored.T, 1)
    if not np.any(np.tril(stored, -1)):
        return stored + np.tril(stored.T, -1)
    return stored


def fid(a: FIDStatistics, b: FIDStatistics) -> float:
    """Frechet distance ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) (utils.frechet), exact
    through the low-rank factor of a small set (N < D, e.g. a few hundred images against 2048 features)."""
    if a.mu.shape != b.mu.shape:
        raise ValueError(f"feature sizes differ: {a.mu.size} vs. {b.mu.size} (statistics from different networks?)")
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma, a.factor, b.factor)
