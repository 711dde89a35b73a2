"""Datasets and preprocessing: every dataset yields the same `Sample` (meshinv.data.sample).

Pixel-space cameras and boxes use continuous pixel coordinates (pixel centres at +0.5); crops turn
them into the NDC cameras that the renderer and the losses use.
"""

from .camera_predictions import CmrCameraPrediction, load_cmr_predicted_cameras, select_camera
from .cub import CUBDataset
from .datasets import DATASET_KINDS, detect_kind, open_dataset
from ..utils.images import read_image, read_mask
from .folder import FolderDataset, FolderDatasetConfig
from .p3d import CadModel, P3DDataset, load_cad_models, p3d_cad_mesh
from .preprocess import CropConfig, crop_sample
from .sample import DataError, PixelCamera, Sample
from .synthetic_shapes import (
    PATTERNS, DeformationFitter, SpeciesParams, bird_points, fit_deformation_map, instance_params, jitter_colors,
    jitter_shape, make_species, sample_instance, species_deformation_map, species_texture, species_vertices,
)
