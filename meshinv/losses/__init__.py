"""Losses of MeshInversion (docs/method.md sections 6 and 7); every loss returns one value per image, (B,).

    chamfer       Chamfer mask loss and the pixel/feature-level Chamfer texture losses, computed
                  by a tiled nearest-neighbour search (no P x Q matrix), on padded point sets
    contextual    the contextual loss (Mechrez et al. 2018) on point sets, tiled likewise
    pixelwise     masked L1 and soft-IoU losses on aligned images (the paper's ablation's
                  alternatives to the Chamfer texture and mask losses)
    vgg           VGG-19 relu3_1 features and the feature point sets of the texture loss
    regularizers  mesh smoothness and the latent negative log-likelihood
"""

from .chamfer import (
    DEFAULT_CHUNK_SIZE,
    NearestNeighbours,
    PointSet,
    SpatialWeighting,
    chamfer_mask_loss,
    feature_chamfer_texture_loss,
    image_point_set,
    nearest_neighbours,
    pad_point_lists,
    pixel_chamfer_texture_loss,
    point_set_from_mask,
)
from .contextual import contextual_loss
from .pixelwise import masked_l1_loss, soft_iou_loss
from .regularizers import latent_nll, smoothness_loss
from .vgg import VGG19_WEIGHTS_FILE, VGGFeatures, feature_point_set, imagenet_normalise, vgg19_relu3_1

__all__ = [
    "DEFAULT_CHUNK_SIZE", "NearestNeighbours", "PointSet", "SpatialWeighting", "chamfer_mask_loss",
    "feature_chamfer_texture_loss", "image_point_set", "nearest_neighbours", "pad_point_lists",
    "pixel_chamfer_texture_loss", "point_set_from_mask", "contextual_loss", "masked_l1_loss", "soft_iou_loss",
    "latent_nll", "smoothness_loss",
    "VGG19_WEIGHTS_FILE", "VGGFeatures", "feature_point_set", "imagenet_normalise", "vgg19_relu3_1",
]
