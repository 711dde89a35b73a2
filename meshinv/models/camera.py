"""CMR-style camera predictor: image -> weak-perspective camera [s, tx, ty, qw, qx, qy, qz].

Architecture (CMR's `Encoder` + scale / translation / quaternion heads, akanazawa/cmr
`nnutils/mesh_net.py`, also MeshInversion's `lib/models/cmr_mesh_net.py`):

    ResNet-18 through layer4            (B, 512, S/32, S/32)   ImageNet weights when available
    conv 4x4 stride 2 + BN + LReLU(0.2) (B, 256, S/64, S/64)
    flatten, 2 x (Linear + BN + LReLU)  (B, feature_dim)        CMR: 200
    scale       relu(Linear + 1) + 1e-12   (offset so that the initial scale is about 1)
    translation Linear                     (tx, ty)
    quaternion  normalize(Linear)          unit (w, x, y, z)

Two options, both off in CMR's configuration:
- rotation_head="6d": the rotation head gives 6 numbers, two columns that Gram-Schmidt turns into
  a rotation matrix (Zhou et al., "On the continuity of rotation representations", CVPR 2019),
  converted to the quaternion. A quaternion head must jump somewhere between q and -q; the 6D
  map is continuous, and trained from scratch it learns a full 360-degree azimuth range much
  faster (bench/RESULTS.md, "Camera predictor").
- masked_input=True: the background (mask 0) is replaced by the crop's white fill before the
  trunk, so the prediction reads the object only. The model then needs the mask, which every
  consumer here has (inversion always does, and predictions score the mask overlay anyway).

The camera is in the NDC convention of the crop the image came from (meshinv.geometry.camera):
the same numbers hold for that crop at any resolution, so a predictor run at 128 x 128 gives the
camera of the 256 x 256 crop of the same box. Input images are in [-1, 1] and are mapped to the
ImageNet normalisation inside the model, as CMR feeds its ResNet.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Optional, get_args

import torch
import torch.nn.functional as F
from torch import nn

from ..geometry.camera import WeakPerspectiveCamera, average_cameras, matrix_to_quaternion, quaternion_to_matrix
from ..utils.weights import MissingWeightsError, find_weights
from .checkpoints import CheckpointError, check_format, check_state_dict, read_checkpoint, write_checkpoint

log = logging.getLogger(__name__)

RESNET18_WEIGHTS = "resnet18-f37072fd.pth"  # torchvision's resnet18(weights=IMAGENET1K_V1) file
CHECKPOINT_FORMAT = "meshinv.camera_predictor"
CHECKPOINT_VERSION = 1
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
RotationHead = Literal["quaternion", "6d"]
ROTATION_HEADS = get_args(RotationHead)


def rotation_from_6d(x: torch.Tensor) -> torch.Tensor:
    """(B, 6) -> (B, 3, 3) rotation matrices: Gram-Schmidt on the two 3-vectors gives the first two
    columns, their cross product the third."""
    first = F.normalize(x[:, :3], dim=-1)
    second = x[:, 3:]
    second = F.normalize(second - (first * second).sum(-1, keepdim=True) * first, dim=-1)
    return torch.stack([first, second, torch.cross(first, second, dim=-1)], dim=-1)


class ResNetTrunk(nn.Module):
    """torchvision's ResNet-18 without its pooling and classifier: (B, 3, S, S) -> (B, 512, S/32, S/32).

    Keeps torchvision's parameter names (conv1, bn1, layer1..4), so its ImageNet file loads as is.
    """

    def __init__(self):
        super().__init__()
        from torchvision.models import resnet18

        resnet = resnet18(weights=None)  # weights come from load_imagenet(), via find_weights
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            self.add_module(name, getattr(resnet, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def load_imagenet(self, path: str | os.PathLike) -> None:
        state = read_checkpoint(path)
        if not isinstance(state, Mapping):
            raise CheckpointError(f"{path} holds a {type(state).__name__}, not a ResNet-18 state_dict")
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        check_state_dict(self, state, what=str(path))
        self.load_state_dict(state)


def _init_normal(module: nn.Module) -> None:
    """CMR's initialisation of the encoder head: N(0, 0.02) weights, zero biases, unit BN."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class CameraPredictor(nn.Module):
    """Predicts (B, 7) cameras [s, tx, ty, qw, qx, qy, qz] from (B, 3, H, H) crops in [-1, 1]
    (resized to image_size when H differs).

    Args:
        image_size: input side S; a multiple of 64 (the head flattens an S/64 x S/64 map).
        feature_dim: size of the feature the three heads read (CMR: 200).
        pretrained_trunk: start the ResNet-18 from ImageNet weights (`resnet18-f37072fd.pth`,
            looked up or fetched by meshinv.utils.weights.find_weights). False: random trunk, trained
            from scratch.
        allow_random_trunk: with pretrained_trunk, a weight file that is missing and cannot be
            fetched is an error unless this is set, in which case the trunk stays random and a
            warning says so (and trunk_initialisation records it).
        rotation_head: "quaternion" (CMR) or "6d" (see the module docstring).
        masked_input: replace the background by `background` before the trunk; forward then needs masks.
        background: that fill, in [-1, 1] (1 = white, CMR's fill outside the photo).
    """

    def __init__(self, image_size: int = 256, feature_dim: int = 200, pretrained_trunk: bool = False,
                 allow_random_trunk: bool = False, rotation_head: str = "quaternion", masked_input: bool = False,
                 background: float = 1.0):
        super().__init__()
        if image_size < 64 or image_size % 64:
            raise ValueError(f"camera predictor image_size must be a positive multiple of 64, got {image_size}")
        if rotation_head not in ROTATION_HEADS:
            raise ValueError(f"camera predictor rotation_head must be one of {ROTATION_HEADS}, got {rotation_head!r}")
        self.image_size = int(image_size)
        self.feature_dim = int(feature_dim)
        self.rotation_head = rotation_head
        self.masked_input = bool(masked_input)
        self.background = float(background)
        self.trunk = ResNetTrunk()
        self.trunk_initialisation = "random"
        if pretrained_trunk:
            self._load_trunk(allow_random_trunk)
        self.head_conv = nn.Sequential(
            nn.Conv2d(512, 256, kernel_size=4, stride=2, padding=1), nn.BatchNorm2d(256), nn.LeakyReLU(0.2))
        cells = (self.image_size // 64) ** 2
        self.head_fc = nn.Sequential(
            nn.Linear(256 * cells, feature_dim), nn.BatchNorm1d(feature_dim), nn.LeakyReLU(0.2),
            nn.Linear(feature_dim, feature_dim), nn.BatchNorm1d(feature_dim), nn.LeakyReLU(0.2))
        _init_normal(self.head_conv)
        _init_normal(self.head_fc)
        self.scale_head = nn.Linear(feature_dim, 1)
        self.translation_head = nn.Linear(feature_dim, 2)
        if rotation_head == "quaternion":
            self.quaternion_head = nn.Linear(feature_dim, 4)
        else:
            # Near the identity at the start: Gram-Schmidt of a near-zero 6D output would be ill-defined.
            self.rotation_6d_head = nn.Linear(feature_dim, 6)
            nn.init.normal_(self.rotation_6d_head.weight, 0.0, 0.02)
            with torch.no_grad():
                self.rotation_6d_head.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))
        self.register_buffer("input_mean", torch.tensor(_IMAGENET_MEAN).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(_IMAGENET_STD).reshape(1, 3, 1, 1), persistent=False)

    def _load_trunk(self, allow_random: bool) -> None:
        try:
            path = find_weights(RESNET18_WEIGHTS, what="camera predictor trunk (ImageNet ResNet-18)")
        except MissingWeightsError as err:
            if not allow_random:
                raise MissingWeightsError(
                    f"{err}\nOr train the trunk from scratch: pretrained_trunk: false (or allow_random_trunk: true "
                    "to fall back to it when the file is missing).") from None
            log.warning("!!! %s is unavailable: the camera predictor's ResNet-18 starts from RANDOM weights "
                        "(allow_random_trunk is set); expect a slower, worse training than CMR's !!! (%s)",
                        RESNET18_WEIGHTS, err)
            return
        self.trunk.load_imagenet(path)
        self.trunk_initialisation = "imagenet"
        log.info("camera predictor trunk: ImageNet weights from %s", path)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments that fix the architecture (what a checkpoint records)."""
        return {"image_size": self.image_size, "feature_dim": self.feature_dim, "rotation_head": self.rotation_head,
                "masked_input": self.masked_input, "background": self.background}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == self.image_size:
            return x
        return F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False,
                             antialias=x.shape[-1] > self.image_size)

    def features(self, images: torch.Tensor, masks: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, 3, H, H) in [-1, 1] (and (B, 1, H, H) masks for a masked_input model) ->
        (B, feature_dim); crops of another size are resized to S x S first (an NDC camera does not
        depend on the crop's resolution, only on its box)."""
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
            raise ValueError(f"camera predictor expects square crops (B, 3, H, H), got {tuple(images.shape)}")
        images = self._resize(images)
        if self.masked_input:
            if masks is None:
                raise ValueError("this camera predictor was trained on masked images (masked_input): pass the masks")
            if masks.shape != (images.shape[0], 1, *masks.shape[-2:]):
                raise ValueError(f"masks must be (B, 1, H, H) for images {tuple(images.shape)}, got {tuple(masks.shape)}")
            masks = self._resize(masks.to(images.dtype))
            images = images * masks + self.background * (1 - masks)
        x = ((images + 1) / 2 - self.input_mean) / self.input_std
        x = self.head_conv(self.trunk(x))
        return self.head_fc(x.flatten(1))

    def predict(self, images: torch.Tensor, masks: Optional[torch.Tensor] = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 7) cameras as forward, and their (B, 3, 3) rotation matrices (the 6D head's own, which
        a matrix loss should use rather than a round trip through the quaternion)."""
        feature = self.features(images, masks)
        # CMR biases the scale towards 1 and keeps it positive.
        scale = F.relu(self.scale_head(feature) + 1.0) + 1e-12
        if self.rotation_head == "quaternion":
            quaternion = F.normalize(self.quaternion_head(feature), dim=-1)
            rotation = quaternion_to_matrix(quaternion)
        else:
            rotation = rotation_from_6d(self.rotation_6d_head(feature))
            quaternion = matrix_to_quaternion(rotation)
        return torch.cat([scale, self.translation_head(feature), quaternion], dim=1), rotation

    def forward(self, images: torch.Tensor, masks: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, 3, H, H) crops in [-1, 1] (+ (B, 1, H, H) masks when masked_input) -> (B, 7)
        [s, tx, ty, qw, qx, qy, qz], s > 0, |q| = 1."""
        return self.predict(images, masks)[0]

    def mirror_averaged(self, images: torch.Tensor, masks: Optional[torch.Tensor] = None) -> torch.Tensor:
        """forward() averaged with the camera predicted for the mirrored crop, mirrored back (test-time
        augmentation with the mirroring the predictor was trained with): the two errors partly cancel
        (on the synthetic test images: median rotation error 8.3 -> 7.6 deg, bench/RESULTS.md)."""
        flipped = None if masks is None else masks.flip(-1)
        mirrored = WeakPerspectiveCamera.from_tensor(self(images.flip(-1), flipped)).mirrored().to_tensor()
        return average_cameras(self(images, masks), mirrored)


# -- checkpoints ----------------------------------------------------------------------------------

WeightStorage = Literal["float32", "float16", "int8"]
INT8_SCALES = "model_int8_scales"  # checkpoint key: per-output-channel scales of the int8 weights


def _int8_weights(state: Mapping[str, torch.Tensor]) -> tuple[dict, dict]:
    """Weights of 2+ dimensions rounded to int8 with a float32 scale per output channel (max |w| /
    127); other floating tensors in float16. Returns (state, scales)."""
    stored, scales = {}, {}
    for key, value in state.items():
        if value.is_floating_point() and value.dim() >= 2:
            scale = value.abs().flatten(1).amax(1).clamp_min(1e-12) / 127
            stored[key] = (value / scale.view(-1, *[1] * (value.dim() - 1))).round().clamp(-127, 127).to(torch.int8)
            scales[key] = scale.float()
        else:
            stored[key] = value.half() if value.is_floating_point() else value
    return stored, scales


def save_camera_predictor(path: str | os.PathLike, model: CameraPredictor,
                          extra: Optional[Mapping[str, Any]] = None, storage: WeightStorage = "float32") -> None:
    """Write a self-describing checkpoint atomically (meshinv.models.checkpoints.write_checkpoint):
    {format, format_version, model_config, model (CPU state_dict), **extra}.

    `extra` (iteration, optimizer state, config, mean shape, ...) must be loadable with
    weights_only=True and must not use the reserved keys. `storage` shrinks a checkpoint to ship in
    the repository: float16 halves it; int8 quarters it (weights of 2+ dimensions as int8 with a
    per-output-channel scale under INT8_SCALES). Loading gives the model's float32 back.
    """
    weights: dict[str, Any] = {"model": model}
    if storage == "float16":
        weights["model"] = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    elif storage == "int8":
        weights["model"], weights[INT8_SCALES] = _int8_weights(model.state_dict())
    write_checkpoint(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, model.config, weights, extra)
    log.info("saved camera predictor %s (%s weights)", path, storage)


def _dequantized(checkpoint: Mapping[str, Any]) -> Mapping[str, torch.Tensor]:
    state, scales = checkpoint["model"], checkpoint.get(INT8_SCALES, {})
    return {k: v.float() * scales[k].view(-1, *[1] * (v.dim() - 1)) if k in scales else v for k, v in state.items()}


def read_camera_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint dict of a camera predictor file (a bare file name is looked up in the
    pretrained folders); checks its format."""
    path = Path(path) if Path(path).is_file() else find_weights(str(path), what="camera predictor checkpoint")
    checkpoint = dict(check_format(read_checkpoint(path), str(path), CHECKPOINT_FORMAT, CHECKPOINT_VERSION,
                                   "camera predictor", "scripts/train_camera.py"))
    checkpoint["path"] = str(path)
    return checkpoint


def camera_predictor_from_checkpoint(checkpoint: Mapping[str, Any], device: torch.device | str = "cpu"
                                     ) -> CameraPredictor:
    """Build the predictor a checkpoint dict describes and load its weights (eval mode)."""
    name = checkpoint.get("path", "checkpoint")
    try:
        model = CameraPredictor(**checkpoint["model_config"])  # no ImageNet file needed: weights follow
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{name}: cannot build a camera predictor from {checkpoint.get('model_config')}: "
                              f"{err}") from err
    state = _dequantized(checkpoint)
    check_state_dict(model, state, what=f"{name} ['model']")
    model.load_state_dict(state)
    return model.to(device).eval()


def load_camera_predictor(path: str | os.PathLike, device: torch.device | str = "cpu") -> CameraPredictor:
    """Load a predictor saved by save_camera_predictor; returned in eval mode on `device`."""
    model = camera_predictor_from_checkpoint(read_camera_checkpoint(path), device)
    log.info("loaded camera predictor from %s: %s", path, model.config)
    return model
