"""The ConvMesh generator: a latent code (and a class) -> a UV texture and a UV deformation map.

Architecture, parameter names and shapes follow docs/method.md section 3, so that the released
MeshInversion / ConvMesh checkpoints load as they are (`checkpoints.load_generator`):

    emb = [z, embed(class)]                       (B, 2 * latent)  (just z when unconditional)
    fc(emb) -> (B, 512, m/4, m/8)                 m = mesh resolution; half width when symmetric
    blk1 -> up2 -> blk2 -> up2                    (B, 256, m, m/2): the trunk
    texture: [blk3a, blk3b, blk3c] each + up2, blk4 + up2, blk5 + up2, blk6, conv 5x5, tanh
    mesh:    blk3_mesh, conv 5x5 (zero init), pole rows averaged
    symmetric: both maps are mirrored along u to full width.

Besides the network: `truncated_normal` (the truncation trick used for sampling) and `update_ema`
(the running-average generator that is saved and inverted).
"""

from __future__ import annotations

import logging
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..geometry.procedural import symmetrize_width
from ..geometry.template import circular_pad_width

logger = logging.getLogger(__name__)

TRUNK_CHANNELS = 512
NORM_TYPES = ("batch", "instance", "none")
TEXTURE_UP_BLOCKS = ("blk3a", "blk3b", "blk3c")  # extra x2 stages for textures above 4 x mesh resolution
_LRELU_SLOPE = 0.2


def spectral_conv(in_ch: int, out_ch: int, kernel: int, padding=0, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    """A Conv2d wrapped in torch's (hook-based) spectral norm: its state_dict keys are
    weight_orig / weight_u / weight_v, as in the released checkpoints."""
    return nn.utils.spectral_norm(nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=bias))


def average_pole_rows(mesh_map: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> same, with the first and last rows replaced by their mean along W.

    The first and last rows of the deformation map are sampled only at the two poles; averaging
    them makes the pole offsets independent of where along u the sample falls.
    """
    top = mesh_map[:, :, :1].mean(dim=3, keepdim=True).expand(-1, -1, -1, mesh_map.shape[3])
    bottom = mesh_map[:, :, -1:].mean(dim=3, keepdim=True).expand(-1, -1, -1, mesh_map.shape[3])
    return torch.cat([top, mesh_map[:, :, 1:-1], bottom], dim=2)


def pad_width(x: torch.Tensor, amount: int, circular: bool) -> torch.Tensor:
    """Pad (B, C, H, W) along W: circularly (full-width maps wrap around u) or by replication.

    Replication is what the symmetric generator uses on its half-width maps: for a 3x3 conv it
    equals the even mirror padding that the later symmetrisation implies (for the 5x5 output
    convs it is only an approximation, kept because the released weights were trained with it).
    """
    if circular:
        return circular_pad_width(x, amount)
    return F.pad(x, (amount, amount, 0, 0), mode="replicate")


def _norm_layer(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels, affine=False)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORM_TYPES}, got {norm!r}")


class ConditionalNorm2d(nn.Module):
    """Normalisation without affine parameters, then x * (1 + gamma(emb)) + beta(emb).

    Input (B, C, H, W) and emb (B, E); output (B, C, H, W). The module names (`norm`, `fc_gamma`,
    `fc_beta`) are those of the original's ConditionalBatchNorm2d.
    """

    def __init__(self, channels: int, emb_dim: int, norm: str = "batch"):
        super().__init__()
        self.norm = _norm_layer(norm, channels)
        self.fc_gamma = nn.Linear(emb_dim, channels)
        self.fc_beta = nn.Linear(emb_dim, channels)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        gamma = self.fc_gamma(emb)[:, :, None, None]
        beta = self.fc_beta(emb)[:, :, None, None]
        return self.norm(x) * (1 + gamma) + beta


class ResBlock(nn.Module):
    """Residual block of two spectral-normalised 3x3 convs with conditional normalisation.

    (B, in_ch, H, W), emb (B, E) -> (B, out_ch, H, W). Upsampling happens outside the block (the
    original calls it ResBlockUp). Along x the input is padded circularly (`circular`) or by
    replication; along y the convs zero-pad. The shortcut is a spectral-normalised 1x1 conv when the channel
    count changes.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, circular: bool, norm: str = "batch"):
        super().__init__()
        mid_ch = min(in_ch, out_ch)
        self.circular = circular
        self.conv1 = spectral_conv(in_ch, mid_ch, 3, padding=(1, 0), bias=False)
        self.conv2 = spectral_conv(mid_ch, out_ch, 3, padding=(1, 0), bias=False)
        self.norm1 = ConditionalNorm2d(mid_ch, emb_dim, norm)
        self.norm2 = ConditionalNorm2d(out_ch, emb_dim, norm)
        self.shortcut = spectral_conv(in_ch, out_ch, 1, bias=False) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        x = F.leaky_relu(self.norm1(self.conv1(pad_width(x, 1, self.circular)), emb), _LRELU_SLOPE)
        x = F.leaky_relu(self.norm2(self.conv2(pad_width(x, 1, self.circular)), emb), _LRELU_SLOPE)
        return x + skip


def scaled_channels(channels: int, width_multiplier: float) -> int:
    """Channel count of a narrowed network (at least 4); exactly `channels` at multiplier 1."""
    return channels if width_multiplier == 1 else max(4, int(round(channels * width_multiplier)))


def check_class_ids(class_id: Optional[torch.Tensor], batch: int, n_classes: int, what: str) -> Optional[torch.Tensor]:
    """Validate the class ids given to a (possibly unconditional) network; returns (B,) long or None."""
    if n_classes == 0:
        if class_id is not None:
            raise ValueError(f"this {what} is unconditional (n_classes=0) but class_id was given")
        return None
    if class_id is None:
        raise ValueError(f"this {what} is class-conditional ({n_classes} classes): pass class_id")
    class_id = class_id.reshape(-1)  # (B,) or the original's (B, 1)
    if class_id.shape[0] != batch or class_id.dtype != torch.long:
        raise ValueError(f"class_id must be a long tensor of {batch} ids, got {class_id.dtype} {tuple(class_id.shape)}")
    return class_id


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


def num_texture_up_blocks(texture_resolution: int, mesh_resolution: int) -> int:
    """How many of blk3a/3b/3c a generator needs: texture = 4 * mesh * 2**k, k in 0..3."""
    ratio = texture_resolution / (4 * mesh_resolution)
    k = round(math.log2(ratio)) if ratio > 0 else -1
    if not 0 <= k <= len(TEXTURE_UP_BLOCKS) or 4 * mesh_resolution * 2**k != texture_resolution:
        allowed = [4 * mesh_resolution * 2**i for i in range(len(TEXTURE_UP_BLOCKS) + 1)]
        raise ValueError(f"texture_resolution must be one of {allowed} for mesh_resolution "
                         f"{mesh_resolution}, got {texture_resolution}")
    return k


class ConvMeshGenerator(nn.Module):
    """ConvMesh generator (docs/method.md section 3).

    forward(z (B, latent_dim), class_id (B,) long or None) ->
        texture (B, 3, T, T) in [-1, 1] (tanh), mesh_map (B, 3, M, M) deformation offsets in each
        template vertex's (normal, tangent, bitangent) frame, for `MeshTemplate.vertex_positions`.

    Args:
        latent_dim: size of z; the class embedding has the same size (the fc sees 2 * latent_dim).
        n_classes: number of classes for conditioning; 0 = unconditional (no embedding).
        texture_resolution: T; one of 4M, 8M, 16M, 32M (128/256/512/1024 for M = 32).
        mesh_resolution: M, a power of two >= 8 (32 in all released models).
        symmetric: generate half-width maps and mirror them (replicate padding along x);
            otherwise full width with circular padding.
        norm: the normalisation inside the conditional norm layers: "batch" (the paper; also
            what the original's synchronised batch norm saves), "instance" or "none".
        width_multiplier: scales every hidden channel count (512, 256, 128, 64). 1 is the paper's
            network (and the only width whose keys match released checkpoints); smaller widths make
            CPU-sized priors and fast tests.
    """

    def __init__(self, latent_dim: int = 64, n_classes: int = 0, texture_resolution: int = 512,
                 mesh_resolution: int = 32, symmetric: bool = True, norm: str = "batch",
                 width_multiplier: float = 1.0):
        super().__init__()
        if latent_dim < 1 or n_classes < 0:
            raise ValueError(f"need latent_dim >= 1 and n_classes >= 0, got {latent_dim}, {n_classes}")
        if mesh_resolution < 8 or mesh_resolution & (mesh_resolution - 1):
            raise ValueError(f"mesh_resolution must be a power of two >= 8, got {mesh_resolution}")
        if norm not in NORM_TYPES:
            raise ValueError(f"norm must be one of {NORM_TYPES}, got {norm!r}")
        n_up = num_texture_up_blocks(texture_resolution, mesh_resolution)
        if not width_multiplier > 0:
            raise ValueError(f"width_multiplier must be positive, got {width_multiplier}")
        self.config = dict(latent_dim=latent_dim, n_classes=n_classes, texture_resolution=texture_resolution,
                           mesh_resolution=mesh_resolution, symmetric=symmetric, norm=norm)
        if width_multiplier != 1:
            self.config["width_multiplier"] = float(width_multiplier)
        c512, c256, c128, c64 = (scaled_channels(c, width_multiplier) for c in (512, 256, 128, 64))
        self.trunk_channels = c512
        self.latent_dim = latent_dim
        self.n_classes = n_classes
        self.texture_resolution = texture_resolution
        self.mesh_resolution = mesh_resolution
        self.symmetric = symmetric
        self.start_height = mesh_resolution // 4  # two x2 upsamplings reach the mesh resolution
        self.start_width = self.start_height // 2 if symmetric else self.start_height
        circular = not symmetric

        # Registration order = the original's state_dict order.
        emb_dim = latent_dim
        if n_classes > 0:
            self.emb_class = nn.Embedding(n_classes, latent_dim)
            emb_dim += latent_dim
        self.fc = nn.Linear(emb_dim, c512 * self.start_height * self.start_width)
        self.blk1 = ResBlock(c512, c512, emb_dim, circular, norm)
        self.blk2 = ResBlock(c512, c256, emb_dim, circular, norm)
        self.texture_up_blocks = TEXTURE_UP_BLOCKS[:n_up]
        for name in self.texture_up_blocks:
            setattr(self, name, ResBlock(c256, c256, emb_dim, circular, norm))
        self.blk4 = ResBlock(c256, c128, emb_dim, circular, norm)
        self.blk5 = ResBlock(c128, c128, emb_dim, circular, norm)
        self.blk6 = ResBlock(c128, c64, emb_dim, circular, norm)
        self.conv_final = nn.Conv2d(c64, 3, 5, padding=(2, 0))
        self.blk3_mesh = ResBlock(c256, c64, emb_dim, circular, norm)
        self.conv_mesh = nn.Conv2d(c64, 3, 5, padding=(2, 0))
        # The untrained generator outputs the template itself: smooth start for the mesh branch.
        nn.init.zeros_(self.conv_mesh.weight)
        nn.init.zeros_(self.conv_mesh.bias)
        logger.debug("ConvMeshGenerator %s: %.2fM parameters", self.config,
                     sum(p.numel() for p in self.parameters()) / 1e6)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())

    def embed(self, z: torch.Tensor, class_id: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, latent_dim), (B,) -> the code every layer sees, (B, latent_dim * (2 if conditional else 1))."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must be (B, {self.latent_dim}), got {tuple(z.shape)}")
        class_id = check_class_ids(class_id, z.shape[0], self.n_classes, "generator")
        if class_id is None:
            return z
        return torch.cat([z, self.emb_class(class_id)], dim=1)

    def forward(self, z: torch.Tensor, class_id: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.embed(z, class_id)
        circular = not self.symmetric
        x = self.fc(emb).view(z.shape[0], self.trunk_channels, self.start_height, self.start_width)
        x = _upsample(self.blk1(x, emb))
        x = _upsample(self.blk2(x, emb))  # (B, 256, M, M or M/2)

        tex = x
        for name in self.texture_up_blocks:
            tex = _upsample(getattr(self, name)(tex, emb))
        tex = _upsample(self.blk4(tex, emb))
        tex = _upsample(self.blk5(tex, emb))
        tex = F.leaky_relu(self.blk6(tex, emb), _LRELU_SLOPE)
        tex = torch.tanh(self.conv_final(pad_width(tex, 2, circular)))

        mesh = F.leaky_relu(self.blk3_mesh(x, emb), _LRELU_SLOPE)
        mesh = average_pole_rows(self.conv_mesh(pad_width(mesh, 2, circular)))

        if self.symmetric:
            tex, mesh = symmetrize_width(tex), symmetrize_width(mesh)
        return tex, mesh


def truncated_normal(shape, sigma: float, generator: Optional[torch.Generator] = None,
                     device: Optional[torch.device | str] = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """N(0, 1) samples of `shape` with every |z_i| > sigma redrawn until none is left (the
    truncation trick; sigma 0.25 for class-conditional CUB, a large value disables it).

    Redraws come from `generator` (when given) in order, so a seeded generator gives a
    reproducible result. `device` defaults to the generator's device (CPU without one).
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    z = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    outside = z.abs() > sigma
    while outside.any():
        z[outside] = torch.randn(int(outside.sum()), generator=generator, device=device, dtype=dtype)
        outside = z.abs() > sigma
    return z


@torch.no_grad()
def update_ema(ema_module: nn.Module, module: nn.Module, alpha: float = 0.999) -> None:
    """In place: every parameter p_ema <- alpha * p_ema + (1 - alpha) * p; every buffer copied.

    Buffers (batch-norm running statistics, spectral-norm u / v vectors) are copied rather than
    averaged: they are estimates that belong to the current weights, not weights themselves.
    Both modules must have the same parameter and buffer names.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    params = dict(module.named_parameters())
    buffers = dict(module.named_buffers())
    ema_params = dict(ema_module.named_parameters())
    ema_buffers = dict(ema_module.named_buffers())
    if params.keys() != ema_params.keys() or buffers.keys() != ema_buffers.keys():
        differ = sorted((params.keys() ^ ema_params.keys()) | (buffers.keys() ^ ema_buffers.keys()))
        raise ValueError(f"EMA and source modules differ in parameters/buffers: {differ[:10]}")
    for name, p_ema in ema_params.items():
        p_ema.lerp_(params[name].to(p_ema.dtype), 1.0 - alpha)
    for name, b_ema in ema_buffers.items():
        b_ema.copy_(buffers[name])


def ema_alpha(epoch: int, alpha: float = 0.999) -> float:
    """The original's EMA warm-up: alpha**100 before epoch 10, alpha**10 before epoch 100, then
    alpha, so that the averaged generator is usable early on (visualisation and FID only)."""
    if epoch < 10:
        return alpha**100
    if epoch < 100:
        return alpha**10
    return alpha
