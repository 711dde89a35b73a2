"""Typed configs of the generator and of pretraining (the `model` and `pretrain` YAML sections)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Optional

from ..models.generator import num_texture_up_blocks
from ..render.settings import RenderSettings
from ..utils.config import SettingError, at_least, greater_than, require, within


@dataclass
class ModelConfig:
    """The ConvMesh generator (docs/method.md section 3) and its discriminators (section 4)."""

    latent_dim: int = 64
    n_classes: int = 0                 # 0 = unconditional
    texture_resolution: int = 512
    mesh_resolution: int = 32
    symmetric: bool = True
    norm: Literal["batch", "instance", "none"] = "batch"   # the generator's conditional norm
    width_multiplier: float = 1.0      # scales hidden channels of G and the UV Ds (1 = the paper's)
    num_uv_discriminators: Optional[int] = None  # None: the original's choice for the resolution
    patch_base_channels: int = 64      # PatchGAN width (64 in the paper)
    truncation_sigma: float = 1.0      # resample |z_i| > sigma when sampling (CUB conditional: 0.25)

    def validate(self) -> None:
        at_least(self, 1, "latent_dim", "patch_base_channels")
        at_least(self, 0, "n_classes")
        m = self.mesh_resolution
        require(m >= 8 and not m & (m - 1), "mesh_resolution", f"must be a power of two >= 8, got {m}")
        try:
            num_texture_up_blocks(self.texture_resolution, m)
        except ValueError as err:
            raise SettingError("texture_resolution", str(err).removeprefix("texture_resolution ")) from None
        greater_than(self, 0, "width_multiplier", "truncation_sigma")
        require(self.num_uv_discriminators in (None, 2, 3), "num_uv_discriminators",
                f"must be 2, 3 or null (the original's choice), got {self.num_uv_discriminators}")
        require(self.num_uv_discriminators != 3 or self.texture_resolution >= 512, "num_uv_discriminators",
                f"3 needs texture_resolution >= 512 (as the original), got {self.texture_resolution}")

    def generator_kwargs(self) -> dict:
        return dict(latent_dim=self.latent_dim, n_classes=self.n_classes, texture_resolution=self.texture_resolution,
                    mesh_resolution=self.mesh_resolution, symmetric=self.symmetric, norm=self.norm,
                    width_multiplier=self.width_multiplier)


@dataclass
class PretrainConfig:
    """GAN pretraining on pseudo-GT UV maps (docs/method.md section 4); defaults are the paper's."""

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

    # What a resumed run may change: where it writes, how long it runs (a learning-rate decay then
    # follows the new length) and what it logs; everything else would change what it computes.
    RUN_ONLY: ClassVar[tuple[str, ...]] = (
        "out_dir", "gt_dir", "epochs", "max_steps", "log_every", "sample_every", "checkpoint_every", "keep_every",
        "frechet_every", "frechet_samples", "frechet_components")

    def validate(self) -> None:
        at_least(self, 1, "batch_size", "epochs", "max_steps", "render_size", "log_every", "sample_every",
                 "checkpoint_every", "keep_every", "frechet_every", "frechet_components")
        at_least(self, 0, "num_workers", "d_steps_per_g", "lr_decay_after", "smoothness_weight", "image_loss_weight")
        at_least(self, 2, "frechet_samples")  # a covariance needs two samples
        greater_than(self, 0, "lr_g", "lr_d")
        within(self, 0, 1, "ema_alpha")
        check_adam_betas(self)

    @property
    def render_settings(self) -> RenderSettings:
        """How the image branch renders its fake samples."""
        return RenderSettings(self.render_size)


def check_adam_betas(cfg) -> None:
    """Adam's betas: two numbers in [0, 1)."""
    require(len(cfg.betas) == 2 and all(0 <= b < 1 for b in cfg.betas), "betas",
            f"must be two numbers in [0, 1), got {list(cfg.betas)}")
