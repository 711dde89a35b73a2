"""Datasets and preprocessing: every dataset yields the same `Sample` (meshinv.data.sample) and
describes itself with `.info` (meshinv.data.info.DatasetInfo); open_dataset is the one factory.
Readers only: what builds data with the renderer is in meshinv.datagen.

Pixel-space cameras and boxes use continuous pixel coordinates (pixel centres at +0.5); crops turn
them into the NDC cameras that the renderer and the losses use.
"""

from .camera_predictions import CmrCameraPrediction, load_cmr_predicted_cameras, select_camera
from .cub import CUBDataset
from .datasets import DATASET_KINDS, detect_kind, open_dataset
from .info import DatasetInfo
from ..utils.images import read_image, read_mask
from .folder import FolderDataset, FolderDatasetConfig
from .p3d import CadModel, P3DDataset, load_cad_models, p3d_cad_mesh
from .preprocess import CropConfig, crop_sample
from .sample import DataError, PixelCamera, Sample
