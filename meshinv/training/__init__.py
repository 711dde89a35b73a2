"""GAN pretraining of the ConvMesh generator (docs/method.md section 4): configs, the loss object, the loop;
the camera predictor's training (camera.py); what both trainers share (runs.py)."""

from .config import ModelConfig, PretrainConfig
from ..utils.frechet import PCAFrechet, frechet_distance
from .loop import Pretrainer, pretrain
from .loss import PretrainBatch, PretrainLoss
from .runs import LATEST, RunFolderError, prepare_run_folder

__all__ = ["ModelConfig", "PretrainConfig", "PCAFrechet", "frechet_distance", "LATEST", "Pretrainer", "pretrain",
           "PretrainBatch", "PretrainLoss", "RunFolderError", "prepare_run_folder"]
