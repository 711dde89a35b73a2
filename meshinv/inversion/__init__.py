"""Inversion: find the latent code and camera whose rendering best explains an image (docs/method.md section 6).

    config      InversionAlgorithm (what decides a result: schedule, losses, z selection, camera start),
                InversionJob (which images, output folder, exports), InversionConfig (both: the YAML section)
    objective   InversionObjective: render and score against prepared targets, per image
    engine      Inverter / invert(): z selection and the 4-stage optimisation of a batch of images
    camera_init starting cameras: predictions file, dataset camera, perturbed dataset camera
    run         InversionRun: the resumable batch job behind scripts/invert.py; check_job_inputs
    output      OutputFolder: the job's folder (lock, safe result folders, the resume guard)
    results     the on-disk result format (InversionRecord)
"""

from ..utils.masks import mask_iou
from .camera_init import CameraInitializer, perturb_camera
from .config import (
    CameraInitConfig, ExportConfig, InversionAlgorithm, InversionConfig, InversionJob, InversionLossConfig,
    validate_inversion,
)
from .engine import BatchResult, Inverter, camera_problem, invert
from .objective import InversionObjective, InversionTargets
from .output import OutputFolder, OutputFolderError
from .results import InversionRecord, finished_ids, iter_records, load_record
from .run import JOB_ERRORS, InversionRun, MissingInputsError, check_job_inputs, run_job

__all__ = [
    "CameraInitializer", "perturb_camera", "CameraInitConfig", "ExportConfig", "InversionAlgorithm",
    "InversionConfig", "InversionJob", "InversionLossConfig", "validate_inversion", "BatchResult", "Inverter",
    "camera_problem", "invert", "JOB_ERRORS", "run_job",
    "InversionObjective", "InversionTargets", "mask_iou", "OutputFolder", "OutputFolderError", "InversionRecord",
    "finished_ids", "iter_records", "load_record", "InversionRun", "MissingInputsError", "check_job_inputs",
]
