"""A starting camera from the image alone: multi-hypothesis search over the view sphere.

For every image of a batch (all hypotheses of all images at once):
1. Rotation hypotheses covering SO(3): `views` viewing directions on a Fibonacci sphere, each with
   `rolls` in-plane rotations; plus the image's own starting camera (a predictor's, say) where it
   has one. Scale and translation of each come from the mask: the prior's mean shape, turned by
   the rotation, is centred on the mask's centroid and scaled to its spread.
2. Each hypothesis is refined for `steps` Adam steps on the Chamfer mask loss alone between the
   mean shape's projected vertices and the mask's pixel centres at `mask_size` (cheap: no
   rendering, a few hundred points a side).
3. The best `keep` distinct rotations (at least `distinct_deg` apart) are kept, each with its depth
   mirror: under weak perspective a mirror-symmetric shape turned by R and by D R S (D flips depth,
   S is the shape's mirror symmetry) has the same silhouette, so the mask cannot choose between
   them. A starting camera and its mirror are always kept, whatever their mask loss.
4. Each kept camera is scored jointly with the first `score_candidates` z candidates of the z
   search under the full inversion loss (texture decides what the silhouette cannot); the camera
   of the lowest score wins. A starting camera is therefore kept only when it explains the image
   at least as well as every searched one.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import torch

from ..geometry.camera import (NDC_FLIP, WeakPerspectiveCamera, matrix_to_quaternion, normalize_quaternion,
                               quaternion_to_matrix, rotation_angle_deg)
from ..losses import chamfer_mask_loss, point_set_from_mask
from .config import CameraSearchConfig

if TYPE_CHECKING:
    from .engine import Inverter
    from .objective import InversionTargets

log = logging.getLogger(__name__)

# Where a searched image's starting camera came from (InversionRecord.camera_source).
SEARCH_SOURCE = "search"
# Pairs per tile of the mask loss's nearest-neighbour search: thousands of small point sets, so
# large tiles (the default's would be a Python loop over hundreds of thin ones); 128 MiB in float32.
SEARCH_TILE_PAIRS = 1 << 25


@dataclass
class CameraSearchResult:
    """Per image (first dimension B): the chosen camera, its joint score with the best of the
    scored z candidates, where it came from, and the start camera's own score (NaN where the image
    had no start camera)."""

    cameras: torch.Tensor        # (B, 7)
    scores: torch.Tensor         # (B,)
    sources: list[str]
    start_scores: torch.Tensor   # (B,)


def rotation_grid(views: int, rolls: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """(views * rolls, 3, 3) rotations (object -> camera) whose viewing directions (third rows) lie
    on a Fibonacci sphere, each with `rolls` equally spaced turns about that direction."""
    index = torch.arange(views, dtype=torch.float64) + 0.5
    z = 1 - 2 * index / views
    radius = (1 - z * z).clamp_min(0).sqrt()
    angle = math.pi * (3 - math.sqrt(5)) * index
    directions = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle), z], dim=-1)
    # Any vector not parallel to the direction starts the in-plane frame.
    helper = torch.where((directions[:, 1:2].abs() < 0.9), torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64),
                         torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64))
    first = torch.nn.functional.normalize(torch.cross(helper, directions, dim=-1), dim=-1)
    second = torch.cross(directions, first, dim=-1)
    rotations = []
    for k in range(rolls):
        phi = 2 * math.pi * k / rolls
        x = math.cos(phi) * first + math.sin(phi) * second
        y = torch.cross(directions, x, dim=-1)
        rotations.append(torch.stack([x, y, directions], dim=1))  # rows: x_cam, y_cam, z_cam (det +1)
    return torch.stack(rotations, dim=1).reshape(-1, 3, 3).to(dtype=dtype, device=device)


def depth_mirror(camera: torch.Tensor) -> torch.Tensor:
    """(N, 7) -> (N, 7): the camera with rotation D R S, D = diag(1, 1, -1) (depth flipped),
    S = diag(-1, 1, 1) (the shape's mirror symmetry about x = 0); scale and translation kept. A
    mirror-symmetric shape projects to the same silhouette under both."""
    rotation = quaternion_to_matrix(normalize_quaternion(camera[:, 3:]))
    flip_depth = camera.new_tensor([1.0, 1.0, -1.0])
    flip_x = camera.new_tensor([-1.0, 1.0, 1.0])
    mirrored = flip_depth[:, None] * rotation * flip_x[None, :]
    return torch.cat([camera[:, :3], matrix_to_quaternion(mirrored)], dim=1)


def cameras_from_mask(rotations: torch.Tensor, shapes: torch.Tensor, mask_xy: torch.Tensor,
                      mask_valid: torch.Tensor) -> torch.Tensor:
    """(B, H, 7) cameras: rotation hypotheses (B, H, 3, 3) with the scale and translation that put
    each image's shape (B, V, 3) over its mask points (B, Q, 2), matching centroid and RMS spread."""
    count = mask_valid.sum(1).clamp_min(1).to(mask_xy.dtype)[:, None]
    weights = mask_valid.to(mask_xy.dtype)[..., None]
    flip = mask_xy.new_tensor(NDC_FLIP[:2])
    # In the camera's unflipped frame (the NDC flip is +-1 per axis, its own inverse).
    target = mask_xy * flip
    centre = (target * weights).sum(1) / count                                       # (B, 2)
    spread = ((((target - centre[:, None]) ** 2).sum(-1, keepdim=True) * weights).sum(1) / count).sqrt()  # (B, 1)
    turned = torch.einsum("bhij,bvj->bhvi", rotations, shapes)[..., :2]              # (B, H, V, 2)
    shape_centre = turned.mean(2)
    shape_spread = ((turned - shape_centre[:, :, None]) ** 2).sum(-1).mean(2).sqrt()  # (B, H)
    scale = spread / shape_spread.clamp_min(1e-8)                                     # (B, H)
    translation = centre[:, None] - scale[..., None] * shape_centre
    quaternions = matrix_to_quaternion(rotations)
    return torch.cat([scale[..., None], translation, quaternions], dim=-1)


def refine_on_mask(cameras: torch.Tensor, shapes: torch.Tensor, mask_xy: torch.Tensor, mask_valid: torch.Tensor,
                   steps: int, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Refine (N, 7) cameras of shapes (N, V, 3) against mask points (N, Q, 2) with Adam on the
    Chamfer mask loss (log-scale, translation, quaternion). Returns the cameras (unit quaternions)
    and their final losses (N,)."""
    log_scale = cameras[:, :1].clamp_min(1e-8).log().clone().requires_grad_(True)
    translation = cameras[:, 1:3].clone().requires_grad_(True)
    quaternion = cameras[:, 3:].clone().requires_grad_(True)
    optimizer = torch.optim.Adam([log_scale, translation, quaternion], lr=lr)

    def loss_of(log_s, t, q) -> torch.Tensor:
        camera = WeakPerspectiveCamera(log_s.exp(), t, normalize_quaternion(q))
        return chamfer_mask_loss(camera.project(shapes), mask_xy, target_valid=mask_valid, chunk_size=SEARCH_TILE_PAIRS)

    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss_of(log_scale, translation, quaternion).sum().backward()
            optimizer.step()
    with torch.no_grad():
        final = torch.cat([log_scale.exp(), translation, normalize_quaternion(quaternion)], dim=1)
        return final.detach(), loss_of(final[:, :1].log(), final[:, 1:3], final[:, 3:])


def pick_distinct(cameras: torch.Tensor, losses: torch.Tensor, keep: int, distinct_deg: float) -> torch.Tensor:
    """Indices (keep,) into cameras (H, 7), lowest loss first, each at least `distinct_deg` degrees from
    the rotations picked before it and from their depth mirrors (a mirror has the same mask loss;
    it is added separately). Fewer than `keep` distinct ones: the best remaining fill up."""
    order = torch.argsort(losses, stable=True).tolist()
    mirrors = depth_mirror(cameras)
    picked: list[int] = []
    for i in order:
        if len(picked) == keep:
            break
        q = cameras[i, 3:]
        if all(rotation_angle_deg(q, cameras[j, 3:]) >= distinct_deg
               and rotation_angle_deg(q, mirrors[j, 3:]) >= distinct_deg
               for j in picked):
            picked.append(i)
    picked += [i for i in order if i not in picked][: keep - len(picked)]
    return torch.tensor(picked, dtype=torch.long, device=cameras.device)


class CameraSearch:
    """The search of the module doc, with an Inverter's generator, template and objective."""

    def __init__(self, inverter: "Inverter", cfg: CameraSearchConfig):
        self.inverter = inverter
        self.cfg = cfg

    @torch.no_grad()
    def mean_shapes(self, class_ids: Optional[torch.Tensor], batch: int) -> torch.Tensor:
        """(B, V, 3) the prior's shape at z = 0: of the image's class, or the mean over classes where
        the class is unknown (-1) or the prior is unconditional."""
        inv = self.inverter
        generator, template = inv.generator, inv.template
        z = torch.zeros(1, generator.latent_dim, device=inv.device, dtype=inv.dtype)
        if not generator.n_classes:
            _, mesh_map = generator(z, None)
            return template.vertex_positions(mesh_map).expand(batch, -1, -1)
        classes = torch.arange(generator.n_classes, device=inv.device)
        _, mesh_maps = generator(z.expand(len(classes), -1), classes)
        per_class = template.vertex_positions(mesh_maps)                               # (C, V, 3)
        mean = per_class.mean(0, keepdim=True)
        ids = class_ids if class_ids is not None else torch.full((batch,), -1, device=inv.device)
        return torch.where((ids >= 0)[:, None, None], per_class[ids.clamp_min(0)], mean)

    def _mask_points(self, masks: torch.Tensor):
        size = self.cfg.mask_size
        small = masks.float()
        if masks.shape[-1] != size:
            small = torch.nn.functional.interpolate(small, size=(size, size), mode="area")
        points = point_set_from_mask(small.to(self.inverter.dtype), threshold=0.5)
        empty = points.counts == 0
        if empty.any():  # a mask thinner than a cell at this size: use its full-resolution pixels
            points = point_set_from_mask(masks.to(self.inverter.dtype), threshold=0.5)
        return points.positions, points.valid

    def __call__(self, targets: "InversionTargets", class_ids: Optional[torch.Tensor],
                 start_cameras: Optional[torch.Tensor] = None, start_sources: Optional[list[str]] = None
                 ) -> CameraSearchResult:
        """targets: the batch's prepared targets (B images); class_ids (B,) on the device or None;
        start_cameras (B, 7) with NaN rows where an image has none, and their sources."""
        cfg, inv = self.cfg, self.inverter
        batch = targets.batch_size
        device, dtype = inv.device, inv.dtype
        shapes = self.mean_shapes(class_ids, batch)                                   # (B, V, 3)
        if cfg.vertices < shapes.shape[1]:  # evenly spread over the template's vertex order
            shapes = shapes[:, torch.linspace(0, shapes.shape[1] - 1, cfg.vertices, device=device).round().long()]
        mask_xy, mask_valid = self._mask_points(targets.masks)
        grid = rotation_grid(cfg.views, cfg.rolls, dtype=dtype, device=device)
        hypotheses = cameras_from_mask(grid.expand(batch, -1, -1, -1), shapes, mask_xy, mask_valid)  # (B, H, 7)
        count = hypotheses.shape[1]
        has_start = torch.zeros(batch, dtype=torch.bool, device=device)
        if start_cameras is not None:
            start_cameras = start_cameras.to(device, dtype)
            has_start = torch.isfinite(start_cameras).all(1)
            starts = torch.where(has_start[:, None], start_cameras, hypotheses[:, 0])
            hypotheses = torch.cat([hypotheses, starts[:, None]], dim=1)
        total = hypotheses.shape[1]
        flat = hypotheses.reshape(batch * total, 7)
        refined, losses = refine_on_mask(
            flat, shapes.repeat_interleave(total, 0), mask_xy.repeat_interleave(total, 0),
            mask_valid.repeat_interleave(total, 0), cfg.steps, cfg.lr)
        refined, losses = refined.reshape(batch, total, 7), losses.reshape(batch, total)

        # Kept per image: `keep` distinct searched rotations and the start, each with its mirror.
        kept, origin = [], []
        for b in range(batch):
            picked = pick_distinct(refined[b, :count], losses[b, :count], cfg.keep, cfg.distinct_deg)
            chosen = [refined[b, picked]]
            labels = ["search"] * len(picked)
            if bool(has_start[b]):
                # Both the start as given and refined: a good start may fit the texture better
                # than its silhouette-only refinement.
                chosen.append(torch.stack([start_cameras[b], refined[b, count]]))
                labels += ["start", "start refined"]
            cams = torch.cat(chosen)
            kept.append(torch.cat([cams, depth_mirror(cams)]))
            origin.append(labels + [f"{label} mirrored" for label in labels])
        width = max(len(k) for k in kept)
        # Pad to one width by repeating an image's first camera (its score is a duplicate).
        padded = torch.stack([torch.cat([k, k[:1].expand(width - len(k), -1)]) for k in kept])   # (B, K, 7)
        scores = self._joint_scores(targets, padded, class_ids)                        # (B, K)
        for b, k in enumerate(kept):
            scores[b, len(k):] = math.inf
        best = scores.argmin(1)
        cameras = padded[torch.arange(batch, device=device), best]
        result_sources, start_scores = [], torch.full((batch,), math.nan, dtype=dtype, device=device)
        for b in range(batch):
            label = origin[b][int(best[b])]
            start = (start_sources[b] if start_sources is not None and bool(has_start[b]) else "")
            if bool(has_start[b]):
                start_scores[b] = scores[b, origin[b].index("start")]
            if label.startswith("start"):
                result_sources.append(f"{start}+search: kept the start" + (" (refined)" if "refined" in label else "")
                                      + (" (depth-mirrored)" if "mirrored" in label else ""))
            else:
                result_sources.append(SEARCH_SOURCE + (f" (over {start})" if start else "")
                                      + (" (depth-mirrored)" if "mirrored" in label else ""))
        return CameraSearchResult(cameras.detach(), scores[torch.arange(batch, device=device), best].detach(),
                                  result_sources, start_scores.detach())

    def _joint_scores(self, targets: "InversionTargets", cameras: torch.Tensor,
                      class_ids: Optional[torch.Tensor]) -> torch.Tensor:
        """(B, K): each camera's lowest full loss over the first `score_candidates` z candidates."""
        batch, width = cameras.shape[:2]
        index = torch.arange(batch, device=cameras.device).repeat_interleave(width)
        repeated = targets.select(index)
        classes = class_ids[index] if class_ids is not None else None
        _, scores, _ = self.inverter.select_initial_z(repeated, cameras.reshape(-1, 7), classes,
                                                      count=self.cfg.score_candidates)
        return scores.reshape(batch, width)
