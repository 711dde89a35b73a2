"""Inversion of a batch of images: pick each image's starting z among random samples, then optimise
z and the camera with the 4-stage schedule (docs/method.md section 6).

Each image has its own z, camera, optimiser state and loss, and the batch loss is the sum of the
per-image losses, so a batch gives the same result as its images run one by one (up to float
rounding); the z candidates come from `seed` alone, so they do not depend on the batch either.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..geometry.camera import normalize_quaternion
from ..geometry.template import MeshTemplate
from ..losses import VGGFeatures
from ..models.generator import ConvMeshGenerator
from ..render.settings import RenderSettings, make_renderer
from ..utils.masks import mask_iou
from .camera_search import CameraSearch, CameraSearchResult
from .config import InversionAlgorithm, validate_inversion
from .objective import InversionObjective, InversionTargets, ObjectiveOutput, left_out_terms, load_feature_vgg
from .refine import refine_batch

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    """Per-image outputs of `invert` (first dimension B)."""

    z: torch.Tensor              # (B, D)
    class_ids: torch.Tensor      # (B,) the class used (chosen by the z search where it was unknown), -1 if none
    camera: torch.Tensor         # (B, 7), unit quaternions
    camera_init: torch.Tensor    # (B, 7)
    texture: torch.Tensor        # (B, 3, T, T)
    mesh_map: torch.Tensor       # (B, 3, 32, 32)
    vertices: torch.Tensor       # (B, V, 3)
    render: torch.Tensor         # (B, 3, S, S) the reconstruction in the input view, background 0
    render_mask: torch.Tensor    # (B, 1, S, S)
    iou: torch.Tensor            # (B,)
    losses: list[dict[str, float]]
    init_loss: torch.Tensor      # (B,)
    seconds: float               # wall time of the whole batch
    history: list[dict[str, list[float]]] = field(default_factory=list)  # per image: term -> per-step values
    # per image, what the refinement did (meshinv/inversion/refine.py: Refinement.info); empty when off
    refine: list[dict] = field(default_factory=list)

    def non_finite(self, i: int) -> Optional[str]:
        """Why image i's result is unusable (the outputs holding NaN or infinities), or None."""
        tensors = {"z": self.z, "camera": self.camera, "texture": self.texture, "vertices": self.vertices}
        bad = [name for name, t in tensors.items() if not torch.isfinite(t[i]).all()]
        bad += [f"loss {name}" for name, v in self.losses[i].items() if not math.isfinite(v)]
        bad += ["iou"] if not math.isfinite(float(self.iou[i])) else []
        return f"the optimisation diverged: non-finite {', '.join(bad)}" if bad else None


def _nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.element_size() * t.numel() for t in tensors)


def camera_problem(camera: torch.Tensor) -> Optional[str]:
    """Why a starting camera (7,) cannot be used, or None: NaN or infinite values, a scale that is
    not positive, or a quaternion too short to normalise."""
    if camera.shape != (7,):
        return f"the camera has shape {tuple(camera.shape)}, expected (7,)"
    if not torch.isfinite(camera).all():
        return f"the camera has NaN or infinite values: {camera.tolist()}"
    if camera[0] <= 0:
        return f"the camera scale is not positive: {float(camera[0])}"
    if camera[3:].norm() < 1e-6:
        return f"the camera quaternion is (nearly) zero: {camera[3:].tolist()}"
    return None


class Inverter:
    """Reconstructs batches of images with a pretrained generator (see `invert` for the one-call form).

    Args:
        generator: the prior (eval mode; its weights are never changed).
        template: the mesh it deforms.
        cfg: the algorithm (schedule, losses, z selection; an InversionConfig's job keys are dropped).
        device: where to run.
        vgg: VGG-19 features for the feature-level texture loss; built from cfg.loss when None and
            the term is on (objective.load_feature_vgg: under `loss.on_missing_vgg: skip` the term is
            left out when the weights are unavailable).
        left_out: terms of the loss to leave out, with why (run_job's up-front check found the VGG
            weights unavailable under `skip`); their weights are set to 0.

    What the run computes differently from the paper's loss is recorded: `left_out` ({term: why},
    weight 0 in the config included) and `random_weights` ({term: why}, a random VGG).
    """

    def __init__(self, generator: ConvMeshGenerator, template: MeshTemplate, cfg: InversionAlgorithm,
                 device: torch.device | str = "cpu", vgg: Optional[VGGFeatures] = None,
                 left_out: Optional[dict[str, str]] = None):
        cfg = cfg.algorithm
        validate_inversion(cfg)
        left_out = dict(left_out or {})
        if vgg is None and cfg.loss.feature_weight > 0 and "feature" not in left_out:
            vgg, why = load_feature_vgg(cfg.loss)
            if why is not None:
                left_out["feature"] = why
        off = {f"{term}_weight": 0.0 for term in left_out if getattr(cfg.loss, f"{term}_weight") > 0}
        if off:
            cfg = replace(cfg, loss=replace(cfg.loss, **off))
        self.left_out = {**left_out_terms(cfg.loss), **left_out}
        self.random_weights = ({} if vgg is None or cfg.loss.feature_weight <= 0 or vgg.pretrained else
                               {"feature": "VGG-19 with RANDOM weights (inversion.loss.on_missing_vgg: random; "
                                f"the term is meaningless): {vgg.missing_reason or 'weights not loaded'}"})
        self.device = torch.device(device)
        self.generator = generator.to(self.device).eval()
        for parameter in self.generator.parameters():
            parameter.requires_grad_(False)
        # Everything follows the generator's precision, so a float64 generator gives a float64 run.
        self.dtype = next(self.generator.parameters()).dtype
        self.template = template.to(self.device, self.dtype)
        self.cfg = cfg
        self.vgg = vgg.to(self.device, self.dtype) if vgg is not None else None
        self.renderer = make_renderer(cfg.render_settings)
        self.objective = InversionObjective(self.template, self.renderer, cfg.loss, self.vgg,
                                            recompute_target_features=cfg.recompute_target_features, seed=cfg.seed)
        self._prescore_objective: Optional[InversionObjective] = None
        self._generated_cache: OrderedDict[Optional[int], tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    # -- pieces --------------------------------------------------------------------------------------
    def _class_ids(self, class_ids: torch.Tensor, image_ids: list[str]) -> Optional[torch.Tensor]:
        """(B,) long on the device, -1 where the class is unknown; None for an unconditional prior."""
        if not self.generator.n_classes:
            return None
        too_large = [image_ids[i] for i in (class_ids >= self.generator.n_classes).nonzero().flatten().tolist()]
        if too_large:
            raise ValueError(f"images {too_large} have class ids beyond the prior's {self.generator.n_classes} classes")
        return class_ids.long().to(self.device)

    def _evaluate(self, z: torch.Tensor, camera: torch.Tensor, class_ids: Optional[torch.Tensor],
                  targets: InversionTargets) -> tuple[ObjectiveOutput, torch.Tensor, torch.Tensor]:
        texture, mesh_map = self.generator(z, class_ids)
        return self.objective(z, texture, mesh_map, camera, targets), texture, mesh_map

    def _candidates(self, count: Optional[int]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The z candidates (n, D), drawn once from `seed` (the first `count` of them), and the class
        each scores with for an image of unknown class (k mod n_classes; None for an unconditional prior)."""
        candidates = torch.randn(self.cfg.select_num, self.generator.latent_dim,
                                 generator=torch.Generator().manual_seed(self.cfg.seed))
        if count is not None:
            candidates = candidates[:count]
        candidates = candidates.to(self.device, self.dtype)
        if not self.generator.n_classes:
            return candidates, None
        return candidates, torch.arange(len(candidates), device=self.device) % self.generator.n_classes

    def _generated(self, group: Optional[int], candidates: torch.Tensor,
                   candidate_classes: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(texture (n, 3, T, T), mesh map (n, 3, 32, 32)) of the candidates under the class `group`
        (None: an unconditional prior; -1: candidate k with class k mod n_classes). They are the same
        for every image of the class, so they are kept across batches, the most recently used first,
        within `select_cache_mb`."""
        n = len(candidates)
        cached = self._generated_cache.get(group)
        if cached is not None and len(cached[0]) >= n:
            self._generated_cache.move_to_end(group)
            return cached[0][:n], cached[1][:n]
        classes = None
        if group is not None:
            classes = candidate_classes if group < 0 else torch.full((n,), group, device=self.device)
        step = self.cfg.init_batch_size
        parts = [self.generator(candidates[s:s + step], None if classes is None else classes[s:s + step])
                 for s in range(0, n, step)]
        texture, mesh_map = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        self._generated_cache.pop(group, None)
        budget = self.cfg.select_cache_mb * 2 ** 20
        if _nbytes(texture, mesh_map) <= budget:
            self._generated_cache[group] = (texture, mesh_map)
            while sum(_nbytes(*v) for v in self._generated_cache.values()) > budget:
                self._generated_cache.popitem(last=False)
        return texture, mesh_map

    def _groups(self, class_ids: Optional[torch.Tensor], batch: int) -> list[tuple[Optional[int], torch.Tensor]]:
        """[(class, the images of that class)]: one group of every image for an unconditional prior."""
        if class_ids is None:
            return [(None, torch.arange(batch, device=self.device))]
        return [(group, (class_ids == group).nonzero().flatten()) for group in class_ids.unique().tolist()]

    def _score_all(self, objective: InversionObjective, targets: InversionTargets, cameras: torch.Tensor,
                   class_ids: Optional[torch.Tensor], candidates: torch.Tensor,
                   candidate_classes: Optional[torch.Tensor]) -> torch.Tensor:
        """(B, n) loss of every image with every candidate, about `init_batch_size` (image,
        candidate) pairs per forward pass."""
        n, batch = len(candidates), targets.batch_size
        scores = torch.empty(batch, n, device=self.device, dtype=self.dtype)
        for group, images in self._groups(class_ids, batch):
            textures, mesh_maps = self._generated(group, candidates, candidate_classes)
            chunk = max(1, self.cfg.init_batch_size // len(images))
            group_targets = None
            for start in range(0, n, chunk):
                z = candidates[start:start + chunk]
                m = z.shape[0]
                if group_targets is None or group_targets.batch_size != len(images) * m:
                    group_targets = targets.select(images.repeat_interleave(m))
                # pairs ordered image-major: (image 0, candidates...), (image 1, candidates...), ...
                pair_image = images.repeat_interleave(m)
                out = objective(z.repeat(len(images), 1), textures[start:start + m].repeat(len(images), 1, 1, 1),
                                mesh_maps[start:start + m].repeat(len(images), 1, 1, 1), cameras[pair_image],
                                group_targets)
                scores[images, start:start + m] = out.total.reshape(len(images), m)
        return scores

    def _score_picks(self, targets: InversionTargets, cameras: torch.Tensor, class_ids: Optional[torch.Tensor],
                     candidates: torch.Tensor, candidate_classes: Optional[torch.Tensor],
                     picks: torch.Tensor) -> torch.Tensor:
        """(B, K) full loss of each image with its own K candidates `picks` (B, K), about
        `init_batch_size` pairs per forward pass."""
        batch, k = picks.shape
        scores = torch.empty(batch, k, device=self.device, dtype=self.dtype)
        for group, images in self._groups(class_ids, batch):
            textures, mesh_maps = self._generated(group, candidates, candidate_classes)
            pair_image, pair_candidate = images.repeat_interleave(k), picks[images].flatten()
            totals = []
            for start in range(0, len(pair_image), self.cfg.init_batch_size):
                image = pair_image[start:start + self.cfg.init_batch_size]
                candidate = pair_candidate[start:start + self.cfg.init_batch_size]
                totals.append(self.objective(candidates[candidate], textures[candidate], mesh_maps[candidate],
                                             cameras[image], targets.select(image)).total)
            scores[images] = torch.cat(totals).reshape(len(images), k)
        return scores

    @property
    def prescore_objective(self) -> InversionObjective:
        """The cheap loss of the shortlist's first pass: the full loss's terms but the VGG one, at
        `prescore_size` px (built on first use)."""
        if self._prescore_objective is None:
            cfg = replace(self.cfg.loss, feature_weight=0.0)
            renderer = make_renderer(RenderSettings(self.cfg.prescore_size))
            self._prescore_objective = InversionObjective(self.template, renderer, cfg, seed=self.cfg.seed)
        return self._prescore_objective

    def _prescore_targets(self, targets: InversionTargets) -> InversionTargets:
        """The targets at `prescore_size` px: colours averaged over each low-resolution
        pixel's area, masks where at least half of it is foreground (or its most covered pixel, so
        that no mask comes out empty)."""
        size = (self.cfg.prescore_size,) * 2
        images = F.interpolate(targets.images, size=size, mode="area")
        coverage = F.interpolate(targets.masks.to(images.dtype), size=size, mode="area")
        best = coverage.flatten(1).amax(1).clamp(max=0.5).view(-1, 1, 1, 1)
        return self.prescore_objective.prepare(images, (coverage >= best).to(targets.masks.dtype))

    @torch.no_grad()
    def select_initial_z(self, targets: InversionTargets, cameras: torch.Tensor, class_ids: Optional[torch.Tensor],
                         count: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Each image's best of `select_num` z ~ N(0, I) under the full loss with its initial camera.

        The candidates are drawn once from `seed` and shared by all images: each image still gets
        `select_num` independent normal draws, and a candidate's texture and mesh are generated once
        per class instead of once per image. An image of unknown class (-1) under a
        class-conditional prior scores candidate k with class k mod n_classes, so the search also
        picks its class.

        With `select_shortlist` K > 0 every candidate is first scored under the cheap loss
        (`prescore_objective`), and only each image's best K under the full loss; ties in the full
        loss go to the lower candidate index either way.

        `count` scores only the first `count` candidates (the camera search's joint scoring).

        Returns z (B, D), its loss (B,) and the classes (B,) (None for an unconditional prior).
        (The original's candidate scores leave out the latent norm, which it evaluated on the
        current z rather than the candidate's; the full loss here includes it, as docs/method.md section 6 says.)
        """
        candidates, candidate_classes = self._candidates(count)
        batch, shortlist = targets.batch_size, self.cfg.select_shortlist
        rows = torch.arange(batch, device=self.device)
        if 0 < shortlist < len(candidates):
            cheap = self._score_all(self.prescore_objective, self._prescore_targets(targets), cameras, class_ids,
                                    candidates, candidate_classes)
            picks = cheap.topk(shortlist, dim=1, largest=False).indices.sort(dim=1).values
            scores = self._score_picks(targets, cameras, class_ids, candidates, candidate_classes, picks)
            best = picks[rows, scores.argmin(dim=1)]
            loss = scores.amin(dim=1)
        else:
            scores = self._score_all(self.objective, targets, cameras, class_ids, candidates, candidate_classes)
            best = scores.argmin(dim=1)
            loss = scores[rows, best]
        chosen_classes = None
        if class_ids is not None:
            chosen_classes = torch.where(class_ids >= 0, class_ids, candidate_classes[best])
        return candidates[best], loss, chosen_classes

    def search_cameras(self, images: torch.Tensor, masks: torch.Tensor, class_ids: torch.Tensor, image_ids: list[str],
                       start_cameras: Optional[torch.Tensor] = None, start_sources: Optional[list[str]] = None
                       ) -> CameraSearchResult:
        """Starting cameras from the images alone (meshinv/inversion/camera_search.py, the settings of
        cfg.camera_init.search): images (B, 3, S, S), masks (B, 1, S, S), class ids (B,) (-1 =
        unknown), and optionally each image's own start camera (B, 7) (NaN rows: none) with its
        source, which then competes with the searched ones. Results are on the CPU."""
        images, masks = images.to(self.device, self.dtype), masks.to(self.device)
        targets = self.objective.prepare(images, masks)
        classes = self._class_ids(torch.as_tensor(class_ids), image_ids)
        result = CameraSearch(self, self.cfg.camera_init.search)(targets, classes, start_cameras, start_sources)
        return CameraSearchResult(result.cameras.cpu(), result.scores.cpu(), result.sources, result.start_scores.cpu())

    def _set_learning_rates(self, optimizer: torch.optim.Optimizer, step: int, stage: int) -> None:
        warm = min(1.0, step / self.cfg.warm_up) if self.cfg.warm_up > 0 else 1.0
        optimizer.param_groups[0]["lr"] = self.cfg.z_lrs[stage] * warm
        if len(optimizer.param_groups) > 1:
            optimizer.param_groups[1]["lr"] = self.cfg.camera_lrs[stage] * warm

    # -- the whole thing -----------------------------------------------------------------------------
    def invert(self, images: torch.Tensor, masks: torch.Tensor, cameras: torch.Tensor, class_ids: torch.Tensor,
               image_ids: list[str], on_step: Optional[Callable[[int, ObjectiveOutput], None]] = None,
               progress: bool = False) -> BatchResult:
        """Reconstruct a batch: images (B, 3, S, S) in [-1, 1], masks (B, 1, S, S), initial cameras
        (B, 7) in the crops' NDC, class ids (B,) (-1 = unknown: chosen by the z search), and image ids
        (for messages). Raises ValueError naming the images whose camera cannot be used."""
        problems = [f"{image_id}: {problem}" for image_id, camera in zip(image_ids, cameras.detach().cpu())
                    if (problem := camera_problem(camera)) is not None]
        if problems:
            raise ValueError("unusable starting cameras: " + "; ".join(problems))
        start_time = time.perf_counter()
        images, masks = images.to(self.device, self.dtype), masks.to(self.device)
        cameras = cameras.to(self.device, self.dtype)
        class_ids = self._class_ids(torch.as_tensor(class_ids), image_ids)
        targets = self.objective.prepare(images, masks)

        z0, init_loss, class_ids = self.select_initial_z(targets, cameras, class_ids)
        z = z0.clone().requires_grad_(True)
        camera = cameras.clone().requires_grad_(self.cfg.optimise_camera)
        groups = [{"params": [z]}] + ([{"params": [camera]}] if self.cfg.optimise_camera else [])
        optimizer = torch.optim.Adam(groups, lr=self.cfg.z_lrs[0], betas=tuple(self.cfg.betas))

        history: list[dict[str, list[float]]] = [{} for _ in image_ids]
        total_steps = sum(self.cfg.iterations)
        bar = tqdm(total=total_steps, desc="optimise", leave=False, disable=not progress)
        step = 0
        for stage, iterations in enumerate(self.cfg.iterations):
            for _ in range(iterations):
                step += 1
                self._set_learning_rates(optimizer, step, stage)
                optimizer.zero_grad(set_to_none=True)
                out, _, _ = self._evaluate(z, camera, class_ids, targets)
                out.total.sum().backward()
                optimizer.step()
                for name, value in {**out.terms, "total": out.total}.items():
                    for i, v in enumerate(value.detach().tolist()):
                        history[i].setdefault(name, []).append(v)
                if on_step is not None:
                    on_step(step, out)
                bar.update(1)
        bar.close()

        with torch.no_grad():
            final_camera = camera.detach().clone()
            final_camera[:, 3:] = normalize_quaternion(final_camera[:, 3:])
            out, texture, mesh_map = self._evaluate(z.detach(), final_camera, class_ids, targets)
            iou = mask_iou(out.render.mask[:, 0], masks[:, 0]).to(out.total.dtype)
        vertices, render, render_mask, refined = out.vertices, out.render.image, out.render.mask, []
        if self.cfg.refine.enabled:  # the losses stay the inversion's; the rest is the refined result's
            refinement = refine_batch(images, masks, final_camera, mesh_map, texture, self.template, self.cfg.refine,
                                      self.renderer, self.objective.chunk_size, targets.pixels)
            mesh_map, vertices, texture = refinement.mesh_map, refinement.vertices, refinement.texture
            render, render_mask, iou, refined = (refinement.render, refinement.render_mask, refinement.iou,
                                                 refinement.info)
        losses = [{**{name: float(value[i]) for name, value in out.terms.items()}, "total": float(out.total[i])}
                  for i in range(len(image_ids))]
        return BatchResult(
            z=z.detach().cpu(), class_ids=(class_ids.cpu() if class_ids is not None
                                            else torch.full((len(image_ids),), -1, dtype=torch.long)), camera=final_camera.cpu(), camera_init=cameras.cpu(), texture=texture.cpu(),
            mesh_map=mesh_map.cpu(), vertices=vertices.cpu(), render=render.cpu(),
            render_mask=render_mask.cpu(), iou=iou.cpu(), losses=losses, init_loss=init_loss.cpu(),
            seconds=time.perf_counter() - start_time, history=history, refine=refined,
        )


def invert(generator: ConvMeshGenerator, template: MeshTemplate, images: torch.Tensor, masks: torch.Tensor,
           cameras: torch.Tensor, class_ids: torch.Tensor, image_ids: list[str], cfg: InversionAlgorithm,
           device: torch.device | str = "cpu", vgg: Optional[VGGFeatures] = None) -> BatchResult:
    """One-call inversion of a batch of images; see Inverter.invert for the arguments."""
    return Inverter(generator, template, cfg, device, vgg).invert(images, masks, cameras, class_ids, image_ids)
