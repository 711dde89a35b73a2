"""Inversion: find the latent code and camera whose rendering best explains an image (SPEC section 6).

    config      InversionConfig (schedule, loss weights, z selection, camera start, exports)
    objective   InversionObjective: render and score against prepared targets, per image
    engine      Inverter / invert(): z selection and the 4-stage optimisation of a batch of images
    camera_init starting cameras: predictions file, dataset camera, perturbed dataset camera
    run         InversionRun: the resumable batch job behind scripts/invert.py
    results     the on-disk result format (InversionRecord)
"""

from .camera_init import CameraInitializer, perturb_camera
from .config import CameraInitConfig, ExportConfig, InversionConfig, InversionLossConfig
from .engine import BatchResult, Inverter, invert
from .objective import InversionObjective, InversionTargets, mask_iou
from .results import InversionRecord, finished_ids, iter_records, load_record
from .run import InversionRun

__all__ = [
    "CameraInitializer", "perturb_camera", "CameraInitConfig", "ExportConfig",
    "InversionConfig", "InversionLossConfig", "BatchResult", "Inverter", "invert", "InversionObjective",
    "InversionTargets", "mask_iou", "InversionRecord", "finished_ids", "iter_records", "load_record", "InversionRun",
]
