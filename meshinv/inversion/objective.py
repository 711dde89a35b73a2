"""The inversion objective: render a generated mesh with a camera and score it against target images.

Every term is per image, (B,), so that a batch of images (or of z candidates for one image) is a
batch of independent problems: the sum over the batch has, for each image's parameters, exactly the
gradient of that image's own loss.

Terms (docs/method.md section 7; `InversionLossConfig` holds the weights):
    mask        Chamfer distance between all projected vertices and the target mask's pixel centres
                (mask_loss: raster, 1 - soft IoU of the soft silhouette and the mask, for the ablation)
    pixel       pixel-level Chamfer texture loss, rendering -> target (texture_loss: l1 or
                contextual for the ablation)
    feature     VGG-19 relu3_1 feature-level Chamfer texture loss, both directions
    smoothness  neighbouring face normals (off by default in inversion)
    nll         latent norm mean(z^2 / 2)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import torch

from ..geometry.camera import WeakPerspectiveCamera
from ..geometry.template import MeshTemplate
from ..losses.chamfer import default_chunk_size
from ..losses import (
    PointSet, VGGFeatures, chamfer_mask_loss, contextual_loss, feature_chamfer_texture_loss, image_point_set,
    latent_nll, masked_l1_loss, pixel_chamfer_texture_loss, smoothness_loss, soft_iou_loss,
)
from ..render.renderer import RenderOutput
from ..render.settings import Renderer
from ..utils.errors import error_reason
from ..utils.weights import MissingWeightsError
from .config import InversionLossConfig

log = logging.getLogger(__name__)

TERMS = ("mask", "pixel", "feature", "smoothness", "nll")
# The terms of the paper's inversion loss (docs/method.md section 7); smoothness is off in it.
PAPER_TERMS = ("mask", "pixel", "feature", "nll")


def left_out_terms(cfg: InversionLossConfig) -> dict[str, str]:
    """{term: why} for the terms of the paper's loss that `cfg` turns off (weight 0)."""
    return {term: f"weight 0 in the config (inversion.loss.{term}_weight)"
            for term in PAPER_TERMS if getattr(cfg, f"{term}_weight") <= 0}


def load_feature_vgg(cfg: InversionLossConfig) -> tuple[Optional[VGGFeatures], Optional[str]]:
    """(the VGG-19 of the feature term, None): its weights found or fetched, or random ones under
    `on_missing_vgg: random`; or (None, why the term is left out) when they are unavailable under
    `on_missing_vgg: skip` (logged loudly). Raises MissingWeightsError under `error`, the default."""
    try:
        vgg = VGGFeatures(cfg.vgg_weights, allow_random_weights=cfg.on_missing_vgg == "random",
                          pool_threshold=cfg.subpool_threshold)
        return vgg, None
    except MissingWeightsError as err:
        if cfg.on_missing_vgg != "skip":
            raise MissingWeightsError(f"{err}\n(inversion.loss.on_missing_vgg: skip leaves the term out instead; "
                                      "inversion.loss.feature_weight: 0 turns it off)") from None
        why = f"VGG-19 weights unavailable (inversion.loss.on_missing_vgg: skip): {error_reason(err)}"
    log.warning("!!! the feature-level Chamfer texture term of the paper's loss is LEFT OUT: %s !!!", why)
    return None, why


def select_points(points: PointSet, index: torch.Tensor) -> PointSet:
    """The point sets of the images `index` (a repeat is a copy), trimmed to their longest."""
    valid = points.valid[index]
    longest = int(valid.sum(dim=1).max()) if valid.numel() else 0
    return PointSet(points.positions[index, :longest], points.values[index, :longest], valid[:, :longest])


def subsample_points(points: PointSet, count: int, generator: Optional[torch.Generator] = None) -> PointSet:
    """At most `count` valid points per image, drawn uniformly without replacement (the original's
    random 8192-point subsampling); positions and values keep their pairing."""
    if points.positions.shape[1] <= count:
        return points
    scores = torch.rand(points.valid.shape, generator=generator, device="cpu").to(points.valid.device)
    scores = scores.masked_fill(~points.valid, 2.0)  # invalid entries sort last
    order = scores.argsort(dim=1)[:, :count]
    valid = points.valid.gather(1, order)
    return PointSet(points.positions.gather(1, order[..., None].expand(-1, -1, 2)),
                    points.values.gather(1, order[..., None].expand(-1, -1, points.values.shape[-1])), valid)


@dataclass(frozen=True)
class InversionTargets:
    """What the losses compare with, prepared once per batch of images.

    images (B, 3, S, S) in [-1, 1] and masks (B, 1, S, S) in {0, 1}: the inputs.
    pixels: foreground pixel centres with their colours (also the mask loss's point set).
    features: the target's VGG feature point set (None when the feature term is off).
    """

    images: torch.Tensor
    masks: torch.Tensor
    pixels: PointSet
    features: Optional[PointSet]

    @property
    def batch_size(self) -> int:
        return self.images.shape[0]

    def select(self, index: torch.Tensor) -> "InversionTargets":
        return InversionTargets(self.images[index], self.masks[index], select_points(self.pixels, index),
                                None if self.features is None else select_points(self.features, index))


@dataclass(frozen=True)
class ObjectiveOutput:
    """terms: weighted per-image terms (name -> (B,)); total (B,); the rendering and the vertices."""

    terms: dict[str, torch.Tensor]
    total: torch.Tensor
    render: RenderOutput
    vertices: torch.Tensor


class InversionObjective:
    """Scores (z, generated texture and mesh map, camera) against InversionTargets.

    Args:
        template: the mesh the generator deforms.
        renderer: renders at the targets' resolution (S x S).
        cfg: weights and Chamfer parameters.
        vgg: VGG-19 features; required when cfg.feature_weight > 0.
        recompute_target_features: recompute the target's features at every call (the reference
            implementation's cost; same values).
        seed: seeds the random subsampling when cfg.subsample_points is set.
    """

    def __init__(self, template: MeshTemplate, renderer: Renderer, cfg: InversionLossConfig,
                 vgg: Optional[VGGFeatures] = None, recompute_target_features: bool = False, seed: int = 0):
        if cfg.feature_weight > 0 and vgg is None:
            raise ValueError("the feature-level Chamfer texture loss is on (feature_weight > 0) but no VGG was given")
        self.template = template
        self.renderer = renderer
        self.cfg = cfg
        self.vgg = vgg
        self.recompute_target_features = recompute_target_features
        self.subsample_generator = torch.Generator().manual_seed(seed)

    @property
    def chunk_size(self) -> int:
        """Pairs per tile of the Chamfer searches: the config's, else the template's device's default."""
        return self.cfg.chunk_size or default_chunk_size(self.template.faces.device)

    @property
    def chamfer_options(self) -> dict:
        c = self.cfg
        return dict(xy_threshold=c.xy_threshold, k=c.xy_k, alpha=c.xy_alpha, rgb_eps=c.rgb_eps, chunk_size=self.chunk_size)

    def _target_features(self, images: torch.Tensor, masks: torch.Tensor) -> Optional[PointSet]:
        if self.cfg.feature_weight <= 0:
            return None
        with torch.no_grad():
            return self.vgg.point_set(images, masks)

    def prepare(self, images: torch.Tensor, masks: torch.Tensor) -> InversionTargets:
        """Target point sets and features of images (B, 3, S, S) under masks (B, 1, S, S)."""
        if images.shape[-2:] != tuple(self.renderer.image_size):
            raise ValueError(f"targets are {tuple(images.shape[-2:])} but the renderer draws {self.renderer.image_size}")
        empty = (masks.flatten(1) > 0.5).sum(1) == 0
        if empty.any():
            raise ValueError(f"target masks {empty.nonzero().flatten().tolist()} of the batch are empty")
        pixels = image_point_set(images, masks)
        return InversionTargets(images, masks, pixels, self._target_features(images, masks))

    def _maybe_subsample(self, points: PointSet) -> PointSet:
        if self.cfg.subsample_points is None:
            return points
        return subsample_points(points, self.cfg.subsample_points, self.subsample_generator)

    def _mask_loss(self, ndc: torch.Tensor, targets: InversionTargets) -> torch.Tensor:
        """(B,) the mask term, unweighted: `mask_loss` chamfer (the paper's) or raster."""
        if self.cfg.mask_loss == "raster":
            return soft_iou_loss(self.renderer.soft_silhouette(ndc, self.template.faces), targets.masks)
        target = targets.pixels
        return chamfer_mask_loss(ndc[..., :2], target.positions, target_valid=target.valid, chunk_size=self.chunk_size)

    def _texture_loss(self, render: RenderOutput, targets: InversionTargets) -> torch.Tensor:
        """(B,) the pixel-level texture term, unweighted: `texture_loss` chamfer (the paper's), l1 or
        contextual. l1 compares every pixel of the target mask with the rendering as drawn, background
        0 where it does not cover the mask (meshinv.losses.masked_l1_loss)."""
        c = self.cfg
        if c.texture_loss == "l1":
            return masked_l1_loss(render.image, targets.images, targets.masks)
        pred = self._maybe_subsample(image_point_set(render.image, render.mask))
        target = self._maybe_subsample(targets.pixels)
        if c.texture_loss == "contextual":
            return contextual_loss(pred.values, target.values, pred_valid=pred.valid, target_valid=target.valid,
                                   bandwidth=c.contextual_bandwidth, eps=c.contextual_eps, chunk_size=self.chunk_size)
        return pixel_chamfer_texture_loss(pred.positions, pred.values, target.positions, target.values,
                                          pred_valid=pred.valid, target_valid=target.valid,
                                          pruning=c.chamfer_pruning, **self.chamfer_options)

    def __call__(self, z: torch.Tensor, texture: torch.Tensor, mesh_map: torch.Tensor, camera: torch.Tensor,
                 targets: InversionTargets) -> ObjectiveOutput:
        """z (B, D), texture (B, 3, T, T), mesh_map (B, 3, 32, 32), camera (B, 7) -> ObjectiveOutput."""
        c = self.cfg
        vertices = self.template.vertex_positions(mesh_map)
        ndc = WeakPerspectiveCamera.from_tensor(camera).transform(vertices)
        render = self.template.render(self.renderer, ndc, texture, background=0.0)
        terms: dict[str, torch.Tensor] = {}
        if c.mask_weight > 0:
            terms["mask"] = c.mask_weight * self._mask_loss(ndc, targets)
        if c.pixel_weight > 0:
            terms["pixel"] = c.pixel_weight * self._texture_loss(render, targets)
        if c.feature_weight > 0:
            target = (self._target_features(targets.images, targets.masks) if self.recompute_target_features
                      else targets.features)
            pred = self._maybe_subsample(self.vgg.point_set(render.image, render.mask))
            target = self._maybe_subsample(target)
            terms["feature"] = c.feature_weight * feature_chamfer_texture_loss(
                pred.positions, pred.values, target.positions, target.values,
                pred_valid=pred.valid, target_valid=target.valid, **self.chamfer_options)
        if c.smoothness_weight > 0:
            terms["smoothness"] = c.smoothness_weight * smoothness_loss(
                vertices, self.template.faces, self.template.face_neighbours)
        if c.nll_weight > 0:
            terms["nll"] = c.nll_weight * latent_nll(z)
        total = torch.stack(list(terms.values())).sum(0) if terms else z.new_zeros(z.shape[0])
        return ObjectiveOutput(terms, total, render, vertices)
