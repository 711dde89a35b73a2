"""GAN pretraining of the ConvMesh generator (SPEC section 4): configs, the loss object, the loop."""

from .config import ModelConfig, PretrainConfig
from .frechet import PCAFrechet, frechet_distance
from .loop import LATEST, Pretrainer, pretrain
from .loss import PretrainBatch, PretrainLoss

__all__ = ["ModelConfig", "PretrainConfig", "PCAFrechet", "frechet_distance", "LATEST", "Pretrainer", "pretrain",
           "PretrainBatch", "PretrainLoss"]
