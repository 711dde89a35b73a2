"""VGG-19 features for the feature-level Chamfer texture loss (docs/method.md section 7).

The network is VGG-19's convolutional trunk up to relu3_1 (torchvision's `vgg19().features[:12]`,
256 channels at 1/4 resolution), with ImageNet weights read from torchvision's own file,
`vgg19-dcbb9e9d.pth`, found or fetched into the torch hub cache by meshinv.utils.weights (as
torchvision's `vgg19(weights=IMAGENET1K_V1)` does). When it can be neither, construction fails with
MissingWeightsError naming the file, its URL and where to put it, unless `allow_random_weights=True`,
which is meant for tests and smoke runs only and logs a warning: random features make the loss
meaningless. (The inversion's `loss.on_missing_vgg` decides between the two, or leaves the term out.)

Per image: the image in [-1, 1] is mapped to [0, 1], normalised with the ImageNet mean and std,
then multiplied by the mask (after the normalisation, as the original), and run through the trunk.
The mask is average-pooled by the feature stride (4) and thresholded at 0.5; the feature vectors
at the kept cells, L2-normalised, form the point set, with positions at the cell centres in the
image's [-1, 1] coordinates. (The original put cell (i, j) at x = 2j/w - 1 and sampled the feature
map there bilinearly with align_corners=True, i.e. at column j - j/w: from 0 to almost a whole cell
off, growing across the map. Here each kept cell's own feature vector is used.)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.weights import MissingWeightsError, find_weights
from .chamfer import PointSet, point_set_from_mask

logger = logging.getLogger(__name__)

VGG19_WEIGHTS_FILE = "vgg19-dcbb9e9d.pth"  # torchvision's VGG19_Weights.IMAGENET1K_V1 file name
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision's VGG-19 configuration "E", first 12 modules of `features`: conv/ReLU pairs and
# max-pools. Building them here (same indices, so the same state_dict keys) avoids allocating the
# whole 140M-parameter network just to keep its first five convolutions.
_RELU3_1_LAYERS = (64, 64, "M", 128, 128, "M", 256)


def vgg19_relu3_1() -> nn.Sequential:
    """The layers of torchvision `vgg19().features[:12]`, same indices: (B,3,H,W) -> (B,256,H/4,W/4)."""
    layers: list[nn.Module] = []
    channels = 3
    for spec in _RELU3_1_LAYERS:
        if spec == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, spec, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = spec
    return nn.Sequential(*layers)


def imagenet_normalise(image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) image in [-1, 1] -> ImageNet-normalised input of torchvision models."""
    mean = image.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = image.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (image / 2 + 0.5 - mean) / std


class VGGFeatures(nn.Module):
    """Frozen VGG-19 trunk through relu3_1, and the feature point sets of the Chamfer loss.

    Args:
        weights_path: explicit weight file (torchvision's VGG-19 state_dict); default: look up (or
            fetch) `vgg19-dcbb9e9d.pth` with meshinv.utils.weights.find_weights.
        allow_random_weights: if the file is missing and cannot be fetched, keep random (Kaiming)
            weights instead of raising. For tests and smoke runs only; a warning is logged.
        pool_threshold: a feature cell is kept where the mask's average over the cell >= this.

    The parameters never require grad; gradients flow to the input image.
    """

    def __init__(self, weights_path: Optional[str | Path] = None, allow_random_weights: bool = False,
                 pool_threshold: float = 0.5):
        super().__init__()
        self.pool_threshold = pool_threshold
        self.trunk = vgg19_relu3_1()
        self.missing_reason: Optional[str] = None   # why the weights are random, when they are
        self.pretrained = self._load_weights(weights_path, allow_random_weights)
        for parameter in self.trunk.parameters():
            parameter.requires_grad_(False)
        # Channels-last activations: oneDNN's convolutions run ~1.2x faster on them on the CPU
        # (bench/RESULTS.md, "Speed"); the values agree with NCHW to float rounding.
        self.trunk.to(memory_format=torch.channels_last)
        self.eval()

    def _load_weights(self, weights_path, allow_random_weights: bool) -> bool:
        try:
            path = find_weights(str(weights_path) if weights_path else VGG19_WEIGHTS_FILE,
                                "VGG-19 weights of the feature-level Chamfer texture loss (ImageNet)")
        except MissingWeightsError as err:
            if not allow_random_weights:
                raise
            self.missing_reason = str(err)
            logger.warning("!!! VGG-19 weights %s UNAVAILABLE (%s): using RANDOM weights (allow_random_weights=True). "
                           "The feature-level Chamfer texture loss is MEANINGLESS with them; use this for tests "
                           "and smoke runs only. !!!", weights_path or VGG19_WEIGHTS_FILE, err)
            for module in self.trunk.modules():
                if isinstance(module, nn.Conv2d):  # torchvision's VGG initialisation
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.zeros_(module.bias)
            return False
        state = torch.load(path, map_location="cpu", weights_only=True)
        prefix = "features."
        kept = {}
        for key, value in state.items():
            if key.startswith(prefix) and int(key[len(prefix):].split(".")[0]) < len(self.trunk):
                kept[key[len(prefix):]] = value
        self.trunk.load_state_dict(kept, strict=True)
        logger.info("loaded VGG-19 relu3_1 weights from %s", path)
        return True

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Feature map (B, 256, H/4, W/4) of an image (B, 3, H, W) in [-1, 1] under mask (B, 1, H, W)."""
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be (B, 3, H, W), got {tuple(image.shape)}")
        if mask.shape != (image.shape[0], 1) + image.shape[2:]:
            raise ValueError(f"mask must be (B, 1, H, W) matching the image, got {tuple(mask.shape)}")
        masked = imagenet_normalise(image) * mask.to(image.dtype)
        return self.trunk(masked.contiguous(memory_format=torch.channels_last))

    def point_set(self, image: torch.Tensor, mask: torch.Tensor) -> PointSet:
        """L2-normalised features at the cells the mask covers, with cell-centre positions.

        Args:
            image: (B, 3, H, W) in [-1, 1], H and W multiples of 4; mask: (B, 1, H, W) in {0, 1}.

        Returns:
            PointSet: positions (B, N, 2) cell centres in [-1, 1], values (B, N, 256) unit vectors,
            valid (B, N). Compute it once for the target (under torch.no_grad) and per step for the
            rendering.
        """
        features = self(image, mask)
        return feature_point_set(features, mask, self.pool_threshold)


def feature_point_set(features: torch.Tensor, mask: torch.Tensor, pool_threshold: float = 0.5) -> PointSet:
    """Features (B, C, h, w) at the cells where avg_pool(mask, H/h) >= pool_threshold, L2-normalised."""
    stride = mask.shape[-1] // features.shape[-1]
    if mask.shape[-2] // stride != features.shape[-2] or mask.shape[-1] // stride != features.shape[-1]:
        raise ValueError(f"mask {tuple(mask.shape)} does not tile feature map {tuple(features.shape)}")
    cell_coverage = F.avg_pool2d(mask.detach().to(features.dtype), stride)
    # point_set_from_mask keeps cells with value > threshold; turn ">= pool_threshold" into that.
    kept = (cell_coverage >= pool_threshold).to(features.dtype)
    points = point_set_from_mask(kept, values=features, threshold=0.5)
    return PointSet(points.positions, F.normalize(points.values, dim=-1), points.valid)
