"""The pretraining objective (docs/method.md section 4) as one object that the loop calls per phase.

Generator: masked UV hinge loss (weighted per UV discriminator) + image_weight * least-squares
PatchGAN loss on the generated mesh rendered with the real sample's camera + smoothness_weight *
mesh smoothness. Discriminators: masked UV hinge loss on [real; fake] and the least-squares PatchGAN
loss on the real masked image vs. the fake rendering.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..geometry.camera import WeakPerspectiveCamera
from ..geometry.template import MeshTemplate
from ..losses.regularizers import smoothness_loss
from ..render.settings import Renderer


def masked_mean(values: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean over each sample's masked positions, then over the batch (the original's GANLoss.mean)."""
    if mask is None:
        return values.mean()
    per_sample = (values * mask).sum(dim=(1, 2, 3)) / mask.sum(dim=(1, 2, 3)).clamp(min=1e-8)
    return per_sample.mean()


def hinge_discriminator(scores: torch.Tensor, real: bool, mask: Optional[torch.Tensor]) -> torch.Tensor:
    return masked_mean(F.relu(1 - scores) if real else F.relu(1 + scores), mask)


def hinge_generator(scores: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    return -masked_mean(scores, mask)


def least_squares(scores: torch.Tensor, target: float, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    return masked_mean((scores - target) ** 2, mask)


@dataclass
class PretrainBatch:
    """One batch of pseudo-GT on the training device."""

    texture: torch.Tensor        # (B, 3, T, T) in [-1, 1]
    texture_alpha: torch.Tensor  # (B, 1, T, T)
    mesh: torch.Tensor           # (B, 3, 32, 32)
    image: torch.Tensor          # (B, 3, R, R) masked real image on black, at the render size
    mask: torch.Tensor           # (B, 1, R, R)
    camera: torch.Tensor         # (B, 7)
    class_id: Optional[torch.Tensor]  # (B,) long, None for an unconditional model

    @classmethod
    def from_items(cls, batch: dict, device, render_size: int, conditional: bool) -> "PretrainBatch":
        image, mask = batch["image_256"], batch["mask_256"]
        if image.shape[-1] != render_size:
            image = F.interpolate(image, size=(render_size, render_size), mode="area")
            mask = (F.interpolate(mask, size=(render_size, render_size), mode="area") > 0.5).float()
        to = dict(device=device, non_blocking=True)
        return cls(batch["texture"].to(**to), batch["texture_alpha"].to(**to), batch["mesh"].to(**to),
                   image.to(**to), mask.to(**to), batch["camera"].to(**to),
                   batch["class_id"].long().to(**to) if conditional else None)


def _image_scores(patch_discriminator: nn.Module, image: torch.Tensor, mask: torch.Tensor,
                  use_mask: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    scores = patch_discriminator(image)
    if not use_mask:
        return scores, None
    # Patches are scored where the object covers any of their receptive field's centre region.
    return scores, (F.adaptive_avg_pool2d(mask, scores.shape[-2:]) > 0).float()


class PretrainLoss:
    """Computes each phase's loss; the loop owns the optimisers and the stepping."""

    def __init__(self, generator: nn.Module, uv_discriminator: nn.Module, patch_discriminator: Optional[nn.Module],
                 template: MeshTemplate, renderer: Renderer, latent_dim: int, image_weight: float = 0.2,
                 smoothness_weight: float = 1e-4, mask_image_loss: bool = False):
        self.generator = generator
        self.uv_discriminator = uv_discriminator
        self.patch_discriminator = patch_discriminator
        self.template = template
        self.renderer = renderer
        self.latent_dim = latent_dim
        self.image_weight = image_weight
        self.smoothness_weight = smoothness_weight
        self.mask_image_loss = mask_image_loss

    def _generate(self, batch: PretrainBatch) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.randn(batch.texture.shape[0], self.latent_dim, device=batch.texture.device)
        return self.generator(z, batch.class_id)

    def render(self, texture: torch.Tensor, mesh_map: torch.Tensor, camera: torch.Tensor):
        """Generated maps seen by the real cameras, on black (as the real masked images)."""
        vertices = self.template.vertex_positions(mesh_map)
        ndc = WeakPerspectiveCamera.from_tensor(camera).transform(vertices)
        return self.template.render(self.renderer, ndc, texture, background=-1.0), vertices

    def _uv_inputs(self, texture: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        return torch.cat([texture * alpha, alpha], dim=1)

    def generator_loss(self, batch: PretrainBatch) -> dict[str, torch.Tensor]:
        texture, mesh_map = self._generate(batch)
        scores, masks = self.uv_discriminator(self._uv_inputs(texture, batch.texture_alpha), mesh_map, batch.class_id)
        weights = self.uv_discriminator.loss_weights
        uv = sum(w * hinge_generator(s, m) for w, s, m in zip(weights, scores, masks))
        rendered, vertices = self.render(texture, mesh_map, batch.camera)
        out = {"g_uv": uv}
        total = uv
        if self.patch_discriminator is not None:
            image_scores, image_mask = _image_scores(self.patch_discriminator, rendered.image, rendered.mask,
                                                     self.mask_image_loss)
            out["g_image"] = least_squares(image_scores, 1.0, image_mask)
            total = total + self.image_weight * out["g_image"]
        if self.smoothness_weight > 0:
            out["g_smooth"] = smoothness_loss(vertices, self.template.faces, self.template.face_neighbours).mean()
            total = total + self.smoothness_weight * out["g_smooth"]
        out["g_total"] = total
        return out

    def discriminator_loss(self, batch: PretrainBatch) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            texture, mesh_map = self._generate(batch)
            rendered = self.render(texture, mesh_map, batch.camera)[0] if self.patch_discriminator is not None else None
        fake = self._uv_inputs(texture, batch.texture_alpha)
        real = self._uv_inputs(batch.texture, batch.texture_alpha)
        classes = None if batch.class_id is None else torch.cat([batch.class_id, batch.class_id])
        # One forward on [fake; real], as the original (and one pass is what DDP-style syncing expects).
        scores, masks = self.uv_discriminator(torch.cat([fake, real]), torch.cat([mesh_map, batch.mesh]), classes)
        n = texture.shape[0]
        weights = self.uv_discriminator.loss_weights
        d_fake = sum(w * hinge_discriminator(s[:n], False, m[:n]) for w, s, m in zip(weights, scores, masks))
        d_real = sum(w * hinge_discriminator(s[n:], True, m[n:]) for w, s, m in zip(weights, scores, masks))
        out = {"d_fake": d_fake, "d_real": d_real, "d_total": d_fake + d_real}
        if self.patch_discriminator is not None:
            fake_scores, fake_mask = _image_scores(self.patch_discriminator, rendered.image, rendered.mask,
                                                   self.mask_image_loss)
            real_scores, real_mask = _image_scores(self.patch_discriminator, batch.image, batch.mask,
                                                   self.mask_image_loss)
            out["d_image_fake"] = least_squares(fake_scores, 0.0, fake_mask)
            out["d_image_real"] = least_squares(real_scores, 1.0, real_mask)
            out["d_image_total"] = out["d_image_fake"] + out["d_image_real"]
        return out
