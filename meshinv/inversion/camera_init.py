"""Starting cameras for inversion: a predictions file, the dataset's camera, or that camera perturbed.

A camera-predictor checkpoint, when configured, is applied by the batch runner (it needs the images);
this module handles everything that is per image and cheap.
"""

from __future__ import annotations

import logging
import math
import os
import zlib
from pathlib import Path

import torch

from ..data.camera_predictions import load_cmr_predicted_cameras, select_camera
from ..data.sample import DataError, Sample
from ..geometry.camera import quaternion_multiply
from .config import CameraInitConfig

log = logging.getLogger(__name__)


class NoStartCamera(DataError):
    """No source of CameraInitConfig gives this image a camera (the camera search still can)."""


def resolve_predictions_path(path: str | os.PathLike, data_root: str | os.PathLike) -> Path:
    """Where inversion.camera_init.predictions is: an absolute path as it is; a relative one in the
    working directory when it is there, else in the data folder, so that a config can name the file
    inside its dataset (configs/cub.yaml: cache/cmr_pred_cam.pth) and it follows --data. Raises
    DataError naming every place looked at."""
    path = Path(path)
    candidates = [path] if path.is_absolute() else [path, Path(data_root) / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = " and ".join(str(c.resolve()) for c in candidates)
    raise DataError(f"inversion.camera_init.predictions: {path} not found (looked at {looked}; "
                    "scripts/predict_cameras.py writes such a file)")


def _random_unit_vector(generator: torch.Generator, size: int) -> torch.Tensor:
    v = torch.randn(size, generator=generator, dtype=torch.float64)
    return v / v.norm().clamp_min(1e-12)


def perturb_camera(camera: torch.Tensor, cfg: CameraInitConfig, generator: torch.Generator) -> torch.Tensor:
    """The camera (7,) rotated by exactly cfg.noise_rotation_deg about a random axis (applied in
    camera space), shifted by cfg.noise_translation of the image side in a random direction (the
    NDC image is 2 wide), and its scale multiplied by 1 +- cfg.noise_scale (random sign)."""
    camera = camera.double().clone()
    angle = math.radians(cfg.noise_rotation_deg)
    axis = _random_unit_vector(generator, 3)
    turn = torch.cat([torch.tensor([math.cos(angle / 2)], dtype=torch.float64), math.sin(angle / 2) * axis])
    camera[3:] = quaternion_multiply(turn, camera[3:] / camera[3:].norm())
    camera[1:3] += 2 * cfg.noise_translation * _random_unit_vector(generator, 2)
    sign = 1.0 if torch.rand(1, generator=generator).item() < 0.5 else -1.0
    camera[0] *= 1 + sign * cfg.noise_scale
    return camera.float()


def _noise_generator(seed: int, image_id: str) -> torch.Generator:
    # Seeded per image so that an image gets the same start whatever batch it is in.
    return torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(image_id.encode())) % (2**63))


class CameraInitializer:
    """Chooses each sample's starting camera (see CameraInitConfig for the order of preference)."""

    def __init__(self, cfg: CameraInitConfig, seed: int = 0):
        self.cfg = cfg
        self.seed = seed
        self.predictions = load_cmr_predicted_cameras(cfg.predictions) if cfg.predictions else None
        self.adds_noise = any(x > 0 for x in (cfg.noise_rotation_deg, cfg.noise_translation, cfg.noise_scale))

    def __call__(self, sample: Sample) -> tuple[torch.Tensor, str]:
        """(camera (7,), where it came from). Raises DataError when there is none."""
        prediction = None
        if self.predictions is not None:
            prediction = self.predictions.get(Path(sample.source).stem) or self.predictions.get(sample.image_id)
        dataset_camera = sample.camera if self.cfg.use_dataset_camera else None
        camera, source = select_camera(dataset_camera, prediction, self.cfg.min_prediction_iou)
        if source == "prediction":
            return camera.float(), "predictions"
        if dataset_camera is None:
            why = ("the dataset has none for this image" if self.cfg.use_dataset_camera
                   else "inversion.camera_init.use_dataset_camera is false")
            raise NoStartCamera(f"{sample.source}: no starting camera: {why} and no camera prediction applies "
                                "(set inversion.camera_init.predictor, .predictions, or search.enabled)")
        if not self.adds_noise:
            return sample.camera.float(), "dataset"
        return perturb_camera(sample.camera, self.cfg, _noise_generator(self.seed, sample.image_id)), "dataset+noise"
