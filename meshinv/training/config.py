"""Typed configs of the generator and of pretraining (the `model` and `pretrain` YAML sections)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class ModelConfig:
    """The ConvMesh generator (SPEC section 3) and its discriminators (section 4)."""

    latent_dim: int = 64
    n_classes: int = 0                 # 0 = unconditional
    texture_resolution: int = 512
    mesh_resolution: int = 32
    symmetric: bool = True
    norm: str = "batch"                # generator's conditional norm: batch | instance | none
    width_multiplier: float = 1.0      # scales hidden channels of G and the UV Ds (1 = the paper's)
    num_uv_discriminators: Optional[int] = None  # None: the original's choice for the resolution
    patch_base_channels: int = 64      # PatchGAN width (64 in the paper)
    truncation_sigma: float = 1.0      # resample |z_i| > sigma when sampling (CUB conditional: 0.25)

    def generator_kwargs(self) -> dict:
        return dict(latent_dim=self.latent_dim, n_classes=self.n_classes, texture_resolution=self.texture_resolution,
                    mesh_resolution=self.mesh_resolution, symmetric=self.symmetric, norm=self.norm,
                    width_multiplier=self.width_multiplier)


@dataclass
class PretrainConfig:
    """GAN pretraining on pseudo-GT UV maps (SPEC section 4); defaults are the paper's."""

    data: str = "datasets/synthetic/train/pseudogt_128x128"  # folder of pseudo-GT .npz files
    gt_dir: Optional[str] = None       # synthetic ground truth (<split>/gt) for the Frechet signal
    out_dir: str = "runs/pretrain"
    seed: int = 0
    batch_size: int = 32
    epochs: int = 600
    max_steps: Optional[int] = None    # stop after this many iterations (each G or D step is one)
    num_workers: int = 0
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    betas: tuple[float, float] = (0.0, 0.9)
    d_steps_per_g: int = 2
    lr_decay_after: int = 10**9        # epochs; linear decay to 0 at `epochs` after this (off by default)
    smoothness_weight: float = 1e-4
    image_loss_weight: float = 0.2     # PatchGAN term in the generator objective
    image_branch: bool = True
    mask_image_loss: bool = False      # average the PatchGAN loss over object patches only
    render_size: int = 256             # the image branch renders (and compares) at this size
    ema_alpha: float = 0.999
    ema_warmup: bool = True            # the original's faster averaging in early epochs
    mirror: bool = True                # UV-space mirroring augmentation
    log_every: int = 10
    sample_every: int = 500
    checkpoint_every: int = 200        # the `latest` checkpoint (a killed run loses at most this)
    keep_every: int = 5000             # also keep a numbered copy every this many iterations
    frechet_every: int = 500
    frechet_samples: int = 256
    frechet_components: int = 32
