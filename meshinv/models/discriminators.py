"""Discriminators for pretraining the generator (docs/method.md section 4).

UV space (ConvMesh), all with spectral norm, LeakyReLU 0.2, circular padding along x (u wraps
around), 4 positional-encoding channels and projection conditioning on the class:
    TextureDiscriminator   [texture * alpha, alpha] at the texture resolution (or pooled by
                           `downsample`) -> scores on a grid 8x or 16x coarser;
    MeshDiscriminator      [texture and alpha pooled to the mesh resolution, mesh map] -> scores
                           on a grid 4x coarser;
    UVDiscriminator        the set the original trains, with the weights of their losses.
Each returns (scores, mask): the mask is the visibility (alpha) averaged over each score's input
footprint, for the masked GAN loss (a mask-weighted mean per sample, see the losses package).

Image space (pix2pix "basic" 70x70 PatchGAN): PatchDiscriminator.

Module names follow the original so that its saved discriminators load as they are.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..geometry.template import circular_pad_width
from .generator import check_class_ids, scaled_channels, spectral_conv

_LRELU_SLOPE = 0.2
D_NORM_TYPES = ("none", "instance")


def positional_encoding(height: int, width: int, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(4, height, width): cos and sin of a row angle in [0, pi) (v, pole to pole), then cos and
    sin of a column angle in [-pi, pi) (u, wrapping around); channel order as the original.

    For a half-width map (width == height // 2) the central half of the full-width encoding is
    returned, which is where the generator's own half sits after symmetrisation.
    """
    rows = torch.arange(height, device=device, dtype=torch.float64) * (math.pi / height)
    cols = torch.arange(height, device=device, dtype=torch.float64) * (2 * math.pi / height) - math.pi
    row_angle = rows[:, None].expand(height, height)
    col_angle = cols[None, :].expand(height, height)
    enc = torch.stack([row_angle.cos(), row_angle.sin(), col_angle.cos(), col_angle.sin()])
    if width == height // 2 and width != height:
        enc = enc[:, :, height // 4: height // 4 + width]
    elif width != height:
        raise ValueError(f"positional encoding expects a square or half-width map, got {height}x{width}")
    return enc.to(dtype)


def _with_positional_encoding(x: torch.Tensor) -> torch.Tensor:
    enc = positional_encoding(x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
    return torch.cat([x, enc.expand(x.shape[0], -1, -1, -1)], dim=1)


def _d_norm(norm: str, channels: int) -> nn.Module:
    if norm == "none":
        return nn.Identity()
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    raise ValueError(f"norm must be one of {D_NORM_TYPES}, got {norm!r}")


class _UVDiscriminatorBase(nn.Module):
    """Shared pieces: the 5x5 / 4x4 circular convs and the projection head."""

    def _conv5(self, in_ch: int, out_ch: int) -> nn.Conv2d:
        return spectral_conv(in_ch, out_ch, 5, padding=(2, 0))

    def _conv4_down(self, in_ch: int, out_ch: int, bias: bool = True) -> nn.Conv2d:
        return spectral_conv(in_ch, out_ch, 4, padding=(1, 0), stride=2, bias=bias)

    def _project(self, scores: torch.Tensor, features: torch.Tensor, class_id: Optional[torch.Tensor]) -> torch.Tensor:
        """Projection conditioning: scores + <features, embed(class)> at every position."""
        if class_id is None:
            return scores
        return scores + (features * self.projector(class_id)[:, :, None, None]).sum(dim=1, keepdim=True)


class TextureDiscriminator(_UVDiscriminatorBase):
    """UV texture discriminator.

    forward(x (B, 4, T, T) = [texture * alpha, alpha], class_id (B,) or None) ->
        scores (B, 1, T/s, T/s), mask (B, 1, T/s, T/s) (alpha averaged per score, no gradient),
    with s = 16 when the first conv has stride 2, else 8 (times `downsample`).

    Args:
        texture_resolution: T of the generator's textures (sets the first stride as the original:
            stride 2 for T >= 512 at full scale and for T >= 1024 at any scale).
        n_classes: classes for projection conditioning; 0 = unconditional.
        downsample: average-pool the input by this factor first (the original's extra scale).
        norm: "none" (the original's default; convs have biases) or "instance".
    """

    in_channels = 4  # RGB * alpha, alpha

    def __init__(self, texture_resolution: int, n_classes: int = 0, downsample: int = 1, norm: str = "none",
                 width_multiplier: float = 1.0):
        super().__init__()
        c64, c128, c256, c512 = (scaled_channels(c, width_multiplier) for c in (64, 128, 256, 512))
        self.texture_resolution = texture_resolution
        self.n_classes = n_classes
        self.downsample = downsample
        self.stride_first = (downsample == 1 and texture_resolution >= 512) or texture_resolution >= 1024
        bias = norm == "none"
        nc = self.in_channels + 4
        self.conv1 = (spectral_conv(nc, c64, 4, padding=(1, 0), stride=2) if self.stride_first
                      else self._conv5(nc, c64))
        self.conv2 = self._conv4_down(c64, c128, bias)
        self.bn2 = _d_norm(norm, c128)
        self.conv3 = self._conv4_down(c128, c256, bias)
        self.bn3 = _d_norm(norm, c256)
        self.conv4 = self._conv4_down(c256, c512, bias)
        self.bn4 = _d_norm(norm, c512)
        self.conv5 = self._conv5(c512, 1)
        if n_classes > 0:
            self.projector = nn.Embedding(n_classes, c512)

    @property
    def total_stride(self) -> int:
        return self.downsample * (16 if self.stride_first else 8)

    def forward(self, x: torch.Tensor, class_id: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, 4, T, T) = [texture * alpha, alpha], got {tuple(x.shape)}")
        class_id = check_class_ids(class_id, x.shape[0], self.n_classes, "discriminator")
        if self.downsample > 1:
            x = F.avg_pool2d(x, self.downsample)
        with torch.no_grad():
            mask = F.avg_pool2d(x[:, 3:4], 16 if self.stride_first else 8)
        x = _with_positional_encoding(x)
        pad1 = 1 if self.stride_first else 2
        x = F.leaky_relu(self.conv1(circular_pad_width(x, pad1)), _LRELU_SLOPE)
        x = F.leaky_relu(self.bn2(self.conv2(circular_pad_width(x, 1))), _LRELU_SLOPE)
        x = F.leaky_relu(self.bn3(self.conv3(circular_pad_width(x, 1))), _LRELU_SLOPE)
        x = F.leaky_relu(self.bn4(self.conv4(circular_pad_width(x, 1))), _LRELU_SLOPE)
        scores = self.conv5(circular_pad_width(x, 2))
        return self._project(scores, x, class_id), mask


class MeshDiscriminator(_UVDiscriminatorBase):
    """Texture + mesh discriminator at the mesh resolution.

    forward(x (B, 4, T, T) = [texture * alpha, alpha], mesh_map (B, 3, M, M), class_id) ->
        scores (B, 1, M/4, M/4), mask (B, 1, M/4, M/4).
    The texture and alpha are average-pooled to M x M and stacked with the mesh map.
    """

    in_channels = 4 + 3  # pooled [texture * alpha, alpha], mesh map
    total_stride = 4  # relative to the mesh map

    def __init__(self, n_classes: int = 0, norm: str = "none", width_multiplier: float = 1.0):
        super().__init__()
        self.n_classes = n_classes
        bias = norm == "none"
        nc = self.in_channels + 4
        c64, c128, c256 = (scaled_channels(c, width_multiplier) for c in (64, 128, 256))
        self.conv1 = self._conv5(nc, c64)
        self.conv2 = self._conv4_down(c64, c128, bias)
        self.bn2 = _d_norm(norm, c128)
        self.conv3 = self._conv4_down(c128, c256, bias)
        self.bn3 = _d_norm(norm, c256)
        self.conv4 = self._conv5(c256, 1)
        if n_classes > 0:
            self.projector = nn.Embedding(n_classes, c256)

    def forward(self, x: torch.Tensor, mesh_map: torch.Tensor,
                class_id: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != 4 or mesh_map.dim() != 4 or mesh_map.shape[1] != 3:
            raise ValueError(f"expected x (B, 4, T, T) and mesh_map (B, 3, M, M), got {tuple(x.shape)}, "
                             f"{tuple(mesh_map.shape)}")
        if x.shape[2] % mesh_map.shape[2]:
            raise ValueError(f"texture size {x.shape[2]} is not a multiple of the mesh map size {mesh_map.shape[2]}")
        class_id = check_class_ids(class_id, x.shape[0], self.n_classes, "discriminator")
        x = F.avg_pool2d(x, x.shape[2] // mesh_map.shape[2])
        with torch.no_grad():
            mask = F.avg_pool2d(x[:, 3:4], 4)
        x = _with_positional_encoding(torch.cat([x, mesh_map], dim=1))
        x = F.leaky_relu(self.conv1(circular_pad_width(x, 2)), _LRELU_SLOPE)
        x = F.leaky_relu(self.bn2(self.conv2(circular_pad_width(x, 1))), _LRELU_SLOPE)
        x = F.leaky_relu(self.bn3(self.conv3(circular_pad_width(x, 1))), _LRELU_SLOPE)
        scores = self.conv4(circular_pad_width(x, 2))
        return self._project(scores, x, class_id), mask


class UVDiscriminator(nn.Module):
    """The UV discriminators trained together (the original's MultiScaleDiscriminator).

    d1: TextureDiscriminator at full scale; d2: MeshDiscriminator; d3 (when num_discriminators
    is 3): TextureDiscriminator on the texture pooled 4x. The original picks 3 for T >= 512 and 2
    below (its CUB default).

    `loss_weights` (summing to 1) weight each discriminator's loss in the total UV loss so that a
    plain weighted sum equals the original's (it divides the weighted sum by the sum of the
    weights): (2/3, 1/3) with two discriminators at T >= 512, equal weights otherwise.

    forward(x (B, 4, T, T), mesh_map (B, 3, M, M), class_id) -> (list of scores, list of masks).
    """

    def __init__(self, texture_resolution: int, n_classes: int = 0, num_discriminators: Optional[int] = None,
                 norm: str = "none", width_multiplier: float = 1.0):
        super().__init__()
        if num_discriminators is None:
            num_discriminators = 3 if texture_resolution >= 512 else 2
        if num_discriminators not in (2, 3):
            raise ValueError(f"num_discriminators must be 2 or 3, got {num_discriminators}")
        if num_discriminators == 3 and texture_resolution < 512:
            raise ValueError("3 UV discriminators need texture_resolution >= 512 (as the original)")
        self.num_discriminators = num_discriminators
        self.d1 = TextureDiscriminator(texture_resolution, n_classes, downsample=1, norm=norm,
                                       width_multiplier=width_multiplier)
        self.d2 = MeshDiscriminator(n_classes, norm=norm, width_multiplier=width_multiplier)
        if num_discriminators == 3:
            self.d3 = TextureDiscriminator(texture_resolution, n_classes, downsample=4, norm=norm,
                                           width_multiplier=width_multiplier)
        # The texture discriminator counts double at high resolution when there is no third one.
        relative = (2.0, 1.0) if num_discriminators == 2 and texture_resolution >= 512 else (1.0,) * num_discriminators
        self.loss_weights: tuple[float, ...] = tuple(w / sum(relative) for w in relative)

    def forward(self, x: torch.Tensor, mesh_map: torch.Tensor,
                class_id: Optional[torch.Tensor] = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        outputs = [self.d1(x, class_id), self.d2(x, mesh_map, class_id)]
        if self.num_discriminators == 3:
            outputs.append(self.d3(x, class_id))
        return [s for s, _ in outputs], [m for _, m in outputs]


class PatchDiscriminator(nn.Module):
    """pix2pix "basic" PatchGAN (70x70 receptive field) on images.

    forward(image (B, C, H, W)) -> scores (B, 1, H/8 - 2, W/8 - 2) (30 x 30 for 256 x 256).
    Layers: conv4x4 s2 (-> base) LReLU; n_layers - 1 more conv4x4 s2 and one conv4x4 s1, each
    doubling channels up to 8 * base, with norm and LReLU; conv4x4 s1 -> 1. Convs have biases when
    the norm has no affine parameters (instance norm). Weights ~ N(0, init_gain), biases 0.
    The layers sit in `model` (an nn.Sequential) as in the original, so its `patchD` loads as is.
    """

    def __init__(self, in_channels: int = 3, base_channels: int = 64, n_layers: int = 3, norm: str = "instance",
                 init_gain: float = 0.02):
        super().__init__()
        if norm == "instance":
            make_norm, bias = (lambda c: nn.InstanceNorm2d(c, affine=False, track_running_stats=False)), True
        elif norm == "batch":
            make_norm, bias = nn.BatchNorm2d, False
        elif norm == "none":
            make_norm, bias = (lambda c: nn.Identity()), True
        else:
            raise ValueError(f"norm must be 'instance', 'batch' or 'none', got {norm!r}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, 4, stride=2, padding=1),
                                   nn.LeakyReLU(_LRELU_SLOPE)]
        ch = base_channels
        for i in range(1, n_layers + 1):
            out = base_channels * min(2**i, 8)
            stride = 2 if i < n_layers else 1  # the last of these keeps the resolution
            layers += [nn.Conv2d(ch, out, 4, stride=stride, padding=1, bias=bias), make_norm(out),
                       nn.LeakyReLU(_LRELU_SLOPE)]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)
        self.reset_parameters(init_gain)

    @torch.no_grad()
    def reset_parameters(self, init_gain: float = 0.02, generator: Optional[torch.Generator] = None) -> None:
        """Conv weights ~ N(0, init_gain), biases 0; batch-norm scales ~ N(1, init_gain), shifts 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.normal_(0.0, init_gain, generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.normal_(1.0, init_gain, generator=generator)
                m.bias.zero_()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image)
