"""The optional refinement after the inversion (docs/method.md section 6, "Refinement"): past the
GAN prior where the input image gives evidence, the prior's output where it does not.

    refine_batch(images, masks, cameras, mesh_map, texture, template, cfg)   -> Refinement

Two stages, each optional (RefineConfig, `inversion.refine`), shape first:

shape    a residual added to the generator's deformation map, fitted with Adam to the Chamfer mask
         loss under the final camera (which stays fixed), regularised by the smoothness loss and by
         the mean squared move of the vertices from the inverted mesh. A symmetric template's
         residual is a half map made symmetric as the generator's maps are, so the mesh stays
         mirror-symmetric. Each image keeps its best iterate (lowest objective) among those that fit
         the mask at least as well as the start: the Chamfer mask loss never goes up.
texture  the input projected into UV space through the (refined) mesh and the camera, as pseudo-GT
         is (meshinv/datagen/pseudogt.py): only texels whose surface point is visible, faces the
         camera and lands on the target mask take image colour. The blend weight grows with how
         squarely the texel faces the camera and ramps up from 0 over `feather` texels inside the
         seen region (UV space, u wrapping around), so unseen texels keep the generated colour
         exactly and there is no seam. On a symmetric template a seen texel's colour also goes to
         its mirror texel where that is seen less squarely (the prior's textures are symmetric too).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..datagen.pseudogt import build_pseudogt_textures
from ..geometry.camera import WeakPerspectiveCamera
from ..geometry.procedural import symmetrize_width
from ..geometry.template import MeshTemplate, circular_pad_width
from ..losses import PointSet, chamfer_mask_loss, image_point_set, smoothness_loss
from ..losses.chamfer import default_chunk_size
from ..render.settings import Renderer, RenderSettings, make_renderer
from ..render.texels import TexelSurface, texel_surface
from ..utils.masks import mask_iou
from .config import RefineConfig

log = logging.getLogger(__name__)


@dataclass
class Refinement:
    """refine_batch's outputs (first dimension B): the refined mesh map, vertices and texture, their
    rendering in the input view (background 0) and its IoU with the target mask, and per image
    what ran (info: texture, shape, seconds (its share of the batch), iou_before, iou_after,
    mask_loss_before / after (the unweighted Chamfer mask loss), seen_texels: the fraction of the
    surface's texels that took image colour)."""

    mesh_map: torch.Tensor      # (B, 3, M, M)
    vertices: torch.Tensor      # (B, V, 3)
    texture: torch.Tensor       # (B, 3, T, T)
    render: torch.Tensor        # (B, 3, S, S)
    render_mask: torch.Tensor   # (B, 1, S, S)
    iou: torch.Tensor           # (B,)
    info: list[dict]


# -- shape ---------------------------------------------------------------------------------------------

def _residual_map(residual: torch.Tensor, template: MeshTemplate) -> torch.Tensor:
    """The optimised residual as a full deformation map (symmetric templates: from its half)."""
    return symmetrize_width(residual) if template.symmetric else residual


def _shape_terms(mesh_map: torch.Tensor, residual: torch.Tensor, camera: WeakPerspectiveCamera, target: PointSet,
                 start_vertices: torch.Tensor, template: MeshTemplate, cfg: RefineConfig,
                 chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(objective (B,), unweighted Chamfer mask loss (B,)) of the map mesh_map + residual."""
    vertices = template.vertex_positions(mesh_map + _residual_map(residual, template))
    ndc = camera.transform(vertices)
    chamfer = chamfer_mask_loss(ndc[..., :2], target.positions, target_valid=target.valid, chunk_size=chunk_size)
    total = cfg.mask_weight * chamfer + cfg.closeness_weight * (vertices - start_vertices).pow(2).sum(-1).mean(-1)
    if cfg.smoothness_weight > 0:
        total = total + cfg.smoothness_weight * smoothness_loss(vertices, template.faces, template.face_neighbours)
    return total, chamfer


def refine_shape(mesh_map: torch.Tensor, cameras: torch.Tensor, target: PointSet, template: MeshTemplate,
                 cfg: RefineConfig, chunk_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The shape stage (module doc): mesh_map (B, 3, M, M), cameras (B, 7), the target mask's pixel
    point set. Returns the refined map and the Chamfer mask loss (B,) before and after."""
    mesh_map = mesh_map.detach()
    width = mesh_map.shape[-1] // 2 if template.symmetric else mesh_map.shape[-1]
    residual = mesh_map.new_zeros(*mesh_map.shape[:-1], width, requires_grad=True)
    camera = WeakPerspectiveCamera.from_tensor(cameras.detach())
    with torch.no_grad():
        start_vertices = template.vertex_positions(mesh_map)
    optimizer = torch.optim.Adam([residual], lr=cfg.lr)
    best = residual.detach().clone()
    best_total = start_chamfer = None
    for step in range(cfg.steps + 1):  # the last pass only scores the final iterate
        total, chamfer = _shape_terms(mesh_map, residual, camera, target, start_vertices, template, cfg, chunk_size)
        with torch.no_grad():
            if step == 0:
                best_total, start_chamfer = total.detach().clone(), chamfer.detach().clone()
            else:
                # The best iterate by the objective among those that fit the mask no worse than the start.
                better = (total < best_total) & (chamfer <= start_chamfer)
                best_total = torch.where(better, total, best_total)
                best[better] = residual.detach()[better]
        if step == cfg.steps:
            break
        optimizer.zero_grad(set_to_none=True)
        total.sum().backward()  # each image's own residual gets its own loss's gradient
        optimizer.step()
    refined = mesh_map + _residual_map(best, template)
    with torch.no_grad():
        ndc = camera.transform(template.vertex_positions(refined))
        chamfer = chamfer_mask_loss(ndc[..., :2], target.positions, target_valid=target.valid, chunk_size=chunk_size)
    return refined, start_chamfer, chamfer


# -- texture -------------------------------------------------------------------------------------------

def mirror_texel_columns(size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(size,) the column of each column's mirror texel in a symmetric template's texture: u and
    1/2 - u (mod 1) are mirror images (x -> -x), so column j pairs with (size/2 - 1 - j) mod size,
    the pairing the generator's symmetric textures have (meshinv.geometry.procedural.symmetrize_width)."""
    return (size // 2 - 1 - torch.arange(size, device=device)) % size


def inward_ramp(support: torch.Tensor, width: int) -> torch.Tensor:
    """(B, 1, T, T) bool -> float in [0, 1]: 0 outside the support, k / width at k texels (chessboard
    distance, u wrapping around) inside its border, 1 from `width` texels in. Neighbouring texels
    differ by at most 1 / width."""
    current = support.to(torch.float32)
    ramp = torch.zeros_like(current)
    for _ in range(width):
        ramp = ramp + current
        padded = F.pad(circular_pad_width(current, 1), (0, 0, 1, 1), mode="replicate")
        current = -F.max_pool2d(-padded, 3, stride=1)  # erosion by one texel
    return ramp / width


def _texel_facing(ndc: torch.Tensor, template: MeshTemplate, surface: TexelSurface) -> torch.Tensor:
    """(B, N) the z of the surface normal at each texel in NDC (vertex normals interpolated, so it
    varies smoothly over the surface); 1 where the texel faces the camera squarely."""
    normals = surface.surface_points(template.vertex_normals(ndc), template.faces)
    return F.normalize(normals, dim=-1)[..., 2]


def blend_weights(images: torch.Tensor, masks: torch.Tensor, cameras: torch.Tensor, vertices: torch.Tensor,
                  template: MeshTemplate, surface: TexelSurface, cfg: RefineConfig
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The texture stage's projection (module doc): (image colours in UV space (B, 3, T, T), blend
    weight (B, 1, T, T) in [0, 1], 0 on every texel whose colour is not seen)."""
    size = surface.size
    eroded = masks.to(images.dtype)
    if cfg.mask_erode > 0:  # texels at the mask's border (background, occluder) would take mixed colours
        eroded = -F.max_pool2d(-eroded, 2 * cfg.mask_erode + 1, stride=1, padding=cfg.mask_erode)
    colours, seen = build_pseudogt_textures(images, eroded, cameras, vertices, template, surface,
                                            cfg.depth_tolerance, cfg.min_facing)
    with torch.no_grad():
        ndc = WeakPerspectiveCamera.from_tensor(cameras).transform(vertices)
        facing = _texel_facing(ndc, template, surface)
        squareness = ((facing - cfg.min_facing) / (cfg.full_facing - cfg.min_facing)).clamp(0, 1)
        weight = images.new_zeros(images.shape[0], 1, size * size)
        weight[:, 0, surface.texel] = squareness
        weight = weight.reshape(seen.shape) * seen
        if template.symmetric and cfg.mirror:
            mirror = mirror_texel_columns(size, images.device)
            take = weight[..., mirror] > weight
            colours = torch.where(take, colours[..., mirror], colours)
            weight = torch.where(take, weight[..., mirror], weight)
        weight = weight * inward_ramp(weight > 0, cfg.feather).to(weight.dtype) * cfg.texture_strength
    return colours, weight


def refine_texture(images: torch.Tensor, masks: torch.Tensor, cameras: torch.Tensor, vertices: torch.Tensor,
                   texture: torch.Tensor, template: MeshTemplate, cfg: RefineConfig,
                   surface: TexelSurface | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The texture stage: (the blended texture (B, 3, T, T), its blend weight (B, 1, T, T))."""
    if surface is None:
        surface = texel_surface(template, texture.shape[-1]).to(texture.device)
    colours, weight = blend_weights(images.to(texture.dtype), masks, cameras.to(texture.dtype),
                                    vertices.to(texture.dtype), template, surface, cfg)
    blended = torch.where(weight > 0, texture * (1 - weight) + colours * weight, texture)
    return blended, weight


# -- both ----------------------------------------------------------------------------------------------

def refine_batch(images: torch.Tensor, masks: torch.Tensor, cameras: torch.Tensor, mesh_map: torch.Tensor,
                 texture: torch.Tensor, template: MeshTemplate, cfg: RefineConfig, renderer: Renderer | None = None,
                 chunk_size: int | None = None, target: PointSet | None = None) -> Refinement:
    """Refine a batch of inverted results (module doc): images (B, 3, S, S) in [-1, 1] and masks
    (B, 1, S, S) as the inversion's targets, the final cameras (B, 7), and the generator's
    deformation map (B, 3, M, M) and texture (B, 3, T, T). Runs on the inputs' device; the template
    must be there too. `renderer` draws S x S (made when None); chunk_size: the Chamfer search's
    tiles (the device's default when None); target: the masks' pixel point set, when the caller has
    it already (the inversion's targets.pixels)."""
    start = time.perf_counter()
    device, batch = texture.device, texture.shape[0]
    images, masks = images.to(device, texture.dtype), masks.to(device)
    cameras, mesh_map = cameras.to(device, texture.dtype), mesh_map.to(device)
    renderer = renderer or make_renderer(RenderSettings(images.shape[-1]))
    chunk_size = chunk_size or default_chunk_size(device)
    camera = WeakPerspectiveCamera.from_tensor(cameras)

    def draw(vertices: torch.Tensor, texture: torch.Tensor):
        with torch.no_grad():
            render = template.render(renderer, camera.transform(vertices), texture, background=0.0)
        return render, mask_iou(render.mask[:, 0], masks[:, 0]).to(texture.dtype)

    with torch.no_grad():
        vertices = template.vertex_positions(mesh_map)
    _, iou_before = draw(vertices, texture)
    info = [{"texture": cfg.texture, "shape": cfg.shape} for _ in range(batch)]
    if cfg.shape:
        target = target if target is not None else image_point_set(images, masks)
        with torch.enable_grad():
            mesh_map, before, after = refine_shape(mesh_map, cameras, target, template, cfg, chunk_size)
        with torch.no_grad():
            vertices = template.vertex_positions(mesh_map)
        for entry, b, a in zip(info, before.tolist(), after.tolist()):
            entry.update(mask_loss_before=b, mask_loss_after=a)
    if cfg.texture:
        surface = texel_surface(template, texture.shape[-1]).to(device)
        texture, weight = refine_texture(images, masks, cameras, vertices, texture.detach(), template, cfg, surface)
        on_surface = float(len(surface.texel))
        for entry, w in zip(info, weight.flatten(1)):
            entry["seen_texels"] = float((w > 0).sum()) / on_surface
    render, iou = draw(vertices, texture)
    seconds = (time.perf_counter() - start) / batch
    for entry, b, a in zip(info, iou_before.tolist(), iou.tolist()):
        entry.update(seconds=seconds, iou_before=b, iou_after=a)
    return Refinement(mesh_map.detach(), vertices.detach(), texture.detach(), render.image, render.mask, iou, info)
