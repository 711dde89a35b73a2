"""Evaluation metrics, kept in a registry (name -> function).

Per image (a function of one image's EvaluationContext, returning a float):
    mask_iou        rendered hard mask vs. the target mask, input view (docs/method.md section 8)
    full_mask_iou   the same rendered mask vs. the ground-truth full-object mask (synthetic data)
    novel_view_iou  silhouette IoU of prediction vs. ground truth over turntable views (synthetic)
    chamfer_3d      Chamfer distance of the vertices after weak-perspective alignment (synthetic)
    rotation_error_deg  angle between the final camera's rotation and the dataset's camera's (the
                    ground truth on synthetic data; SfM or annotations elsewhere)
    iou_3d          voxel IoU with the image's CAD model, box-aligned per image (PASCAL3D+;
                    meshinv/evaluation/voxels.py)
    psnr_input_view, ssim_input_view    the textured reconstruction in the input view vs. the GT
                    mesh with its true texture under the GT camera, over the union of both
                    silhouettes (synthetic; meshinv/evaluation/appearance.py)
    psnr_novel_views, ssim_novel_views  the same over the turntable views of novel_view_iou
    uv_error_seen, uv_error_unseen      mean absolute error of the predicted UV texture vs. the
                    true one, over the texels seen in the input view and over the others (synthetic)
Over the whole dataset (one number from all images):
    fid_1           FID of masked inputs vs. masked reconstructions in the input view (docs/method.md section 8; fid.py)
    fid_10, fid_12  FID of novel views about the canonical pose vs. real-image statistics
                    (docs/method.md section 8; fid.py)
    iou_3d_global   iou_3d with one box alignment averaged over all images, as CMR's eval_mean_iou.m

A per-image metric raises MissingInputError, naming what is missing, when the image lacks an input
it needs; it is a function decorated with @register_metric("name", needs_gt=...). Its MetricInfo
says what the dataset must offer (needs_gt, needs_camera, needs_cad) and, for a metric with a
threshold of interest, `within` (the report gives the fraction of images at most that value). A
dataset-level metric is registered with @register_dataset_metric("name") on a factory taking the run's
DatasetMetricEnv and returning an accumulator with update(ctx) (once per image, may raise
MissingInputError for that image) and compute() -> (value, images used), which raises ValueError
when there is no value. Building one may raise ImportError, OSError or ValueError (a missing
package, weight file or reference): the metric is then skipped with that reason. scripts/evaluate.py
and training code look metrics up by name with get_metric. Only torch and the geometry/render core
are imported here; the FID and voxel code is imported when those metrics are used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol

import torch

from ..geometry.camera import WeakPerspectiveCamera, rotation_angle_deg
from ..geometry.template import MeshTemplate
from ..render.settings import Renderer, make_renderer
from ..render.texels import resample_texture, seen_texels, texel_surface
from ..render.views import render_turntable, turntable_silhouettes
from ..utils.masks import mask_iou as iou
from .appearance import masked_mean, mean_absolute_error, psnr, ssim, ssim_map
from .config import EvaluationConfig

log = logging.getLogger(__name__)

# The appearance metrics render both meshes over this background (in [-1, 1]: mid grey, 0.5 in
# [0, 1]); it is what a pixel covered by only one of them is compared with.
APPEARANCE_BACKGROUND = 0.0
# An exact match has PSNR inf; it is reported as this value, so that means stay finite and
# metrics.json strict JSON. No difference that float32 rendering leaves reaches it (1e-10 MSE).
PSNR_CEILING_DB = 100.0

if TYPE_CHECKING:  # only a type here: importing the inversion package would pull in the losses
    from ..inversion.results import InversionRecord


class MissingInputError(ValueError):
    """A metric cannot be computed for an image: an input it needs is absent."""


@dataclass
class EvaluationContext:
    """Everything a metric may read about one image.

    record       the InversionRecord (tensors on any device; moved to `device` where used)
    template     the mesh template whose faces connect record.vertices (and the GT vertices)
    renderer     a renderer at record.image_size (the input view)
    cfg          the EvaluationConfig (novel-view size, azimuths, scale)
    target_mask  (1, S, S) or (S, S) in {0, 1}: what the inversion fitted, or None
    gt           ground truth of a dataset sample (meshinv.data.synthetic.SyntheticDataset's `gt`:
                 vertices (V, 3), full_mask (1, S, S), ...); empty when there is none
    gt_camera    (7,) the sample's NDC camera of the crop (the GT camera on synthetic data; SfM or
                 annotation cameras elsewhere), or None
    input_image  (3, S, S) in [-1, 1]: the cropped input the inversion saw (input.png or the
                 dataset's sample), or None
    dataset      the evaluation's dataset (iou_3d reads its CAD models), or None
    device       where rendering happens
    shared       a dict shared by all images of one evaluation (e.g. voxelised CAD models)
    """

    record: InversionRecord
    template: MeshTemplate
    renderer: Renderer
    cfg: EvaluationConfig
    target_mask: Optional[torch.Tensor] = None
    gt: dict = field(default_factory=dict)
    gt_camera: Optional[torch.Tensor] = None
    input_image: Optional[torch.Tensor] = None
    dataset: Any = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    cache: dict = field(default_factory=dict, repr=False)  # renders shared by several metrics
    shared: dict = field(default_factory=dict, repr=False)

    @property
    def image_size(self) -> int:
        return int(self.record.image_size)

    def pred_vertices(self) -> torch.Tensor:
        """(V, 3) float32 on `device`, checked against the template."""
        vertices = self.record.vertices.to(self.device, torch.float32)
        _check_vertices(vertices, self.template, "record.vertices")
        return vertices

    def _check_renderer(self) -> None:
        if tuple(self.renderer.image_size) != (self.image_size, self.image_size):
            raise ValueError(f"the renderer is {self.renderer.image_size} but the record is at "
                             f"{self.image_size} x {self.image_size}")

    def pred_mask(self) -> torch.Tensor:
        """(S, S) bool: the predicted mesh's hard mask in the input view at record.image_size."""
        if "pred_mask" not in self.cache:
            self._check_renderer()
            camera = WeakPerspectiveCamera.from_tensor(self.record.camera.to(self.device, torch.float32)[None])
            ndc = camera.transform(self.pred_vertices()[None])
            self.cache["pred_mask"] = self.renderer.rasterize(ndc, self.template.faces).mask[0, 0] > 0.5
        return self.cache["pred_mask"]

    def gt_vertices(self, metric: str) -> torch.Tensor:
        """(V, 3) float32 on `device`: the ground-truth mesh, checked against the template, or MissingInputError."""
        vertices = self.require_gt("vertices", metric).to(self.device, torch.float32)
        _check_vertices(vertices, self.template, "gt['vertices']")
        return vertices

    def _render_input_view(self, vertices: torch.Tensor, camera: torch.Tensor, texture: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_renderer()
        camera = WeakPerspectiveCamera.from_tensor(camera.to(self.device, torch.float32).reshape(1, 7))
        ndc = camera.transform(vertices[None])
        out = self.template.render(self.renderer, ndc, texture.to(self.device, torch.float32)[None],
                                   background=APPEARANCE_BACKGROUND)
        return out.image[0], out.mask[0, 0] > 0.5

    def pred_render(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The reconstruction in the input view at record.image_size: (image (3, S, S) in [-1, 1],
        mask (S, S) bool), background APPEARANCE_BACKGROUND (0)."""
        if "pred_render" not in self.cache:
            self.cache["pred_render"] = self._render_input_view(self.pred_vertices(), self.record.camera,
                                                                self.record.texture)
        return self.cache["pred_render"]

    def gt_render(self, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The ground-truth mesh with its true texture under the sample's camera of the crop, as
        pred_render draws the reconstruction: (image (3, S, S) in [-1, 1], mask (S, S) bool)."""
        if "gt_render" not in self.cache:
            vertices, texture = self.gt_vertices(metric), self.require_gt("texture", metric)
            self.cache["gt_render"] = self._render_input_view(vertices, self.require_gt_camera(metric), texture)
        return self.cache["gt_render"]

    def turntable(self, mesh: str, metric: str) -> tuple[Optional[torch.Tensor], torch.Tensor]:
        """The novel views (meshinv.render.views; cfg.novel_view_size, azimuths, novel_view_scale)
        of the reconstruction (mesh "pred") or the ground-truth mesh ("gt"): (images (N, 3, H, W)
        in [-1, 1] on APPEARANCE_BACKGROUND, or None for a ground truth without a texture; masks
        (N, H, W) bool). Rendered once per image for all the novel-view metrics."""
        key = ("turntable", mesh)
        if key not in self.cache:
            if mesh == "pred":
                vertices, texture = self.pred_vertices(), self.record.texture
            elif mesh == "gt":
                vertices, texture = self.gt_vertices(metric), self.gt.get("texture")
            else:
                raise ValueError(f"turntable: mesh is 'pred' or 'gt', not {mesh!r}")
            cfg = self.cfg
            renderer = make_renderer(cfg.novel_view_size)
            if texture is None:
                self.cache[key] = (None, turntable_silhouettes(self.template, renderer, vertices, cfg.azimuths,
                                                               cfg.novel_view_scale))
            else:
                texture = texture.to(self.device, torch.float32)
                images, masks = render_turntable(self.template, renderer, vertices, texture, cfg.azimuths,
                                                 cfg.novel_view_scale, background=APPEARANCE_BACKGROUND)
                self.cache[key] = (images, masks[:, 0] > 0.5)
        return self.cache[key]

    def require_input_image(self, metric: str) -> torch.Tensor:
        """(3, S, S) in [-1, 1] on `device`, or MissingInputError."""
        if self.input_image is None:
            raise MissingInputError(f"{metric}: no input image (neither input.png nor a dataset sample)")
        image = self.input_image.to(self.device, torch.float32)
        if tuple(image.shape) != (3, self.image_size, self.image_size):
            raise ValueError(f"input image is {tuple(image.shape)}, expected (3, {self.image_size}, "
                             f"{self.image_size}) (the record's image_size)")
        return image

    def require_target_mask(self, metric: str) -> torch.Tensor:
        """(S, S) bool target mask, or MissingInputError."""
        if self.target_mask is None:
            raise MissingInputError(f"{metric}: no target mask (neither target_mask.png nor a dataset sample)")
        return _as_image_mask(self.target_mask, self.image_size, "target mask").to(self.device)

    def require_gt(self, key: str, metric: str) -> torch.Tensor:
        if key not in self.gt:
            raise MissingInputError(f"{metric}: needs ground truth gt[{key!r}] (synthetic data); this sample has "
                                    f"{sorted(self.gt) or 'none'}")
        return self.gt[key]

    def require_gt_camera(self, metric: str) -> torch.Tensor:
        """(7,) the sample's NDC camera of the crop, or MissingInputError."""
        if self.gt_camera is None:
            raise MissingInputError(f"{metric}: needs the sample's ground-truth camera")
        return self.gt_camera


def _check_vertices(vertices: torch.Tensor, template: MeshTemplate, name: str) -> None:
    if vertices.dim() != 2 or vertices.shape != (template.num_vertices, 3):
        raise ValueError(f"{name} is {tuple(vertices.shape)} but the template has {template.num_vertices} "
                         f"vertices: evaluate with the template the results were made with")


def _as_image_mask(mask: torch.Tensor, size: int, name: str) -> torch.Tensor:
    mask = mask.squeeze(0) if mask.dim() == 3 else mask
    if tuple(mask.shape) != (size, size):
        raise ValueError(f"{name} is {tuple(mask.shape)}, expected ({size}, {size}) (the record's image_size)")
    return mask > 0.5


def weak_perspective_chamfer(pred_vertices: torch.Tensor, pred_camera: torch.Tensor, gt_vertices: torch.Tensor,
                             gt_camera: torch.Tensor) -> float:
    """Symmetric Chamfer distance between two meshes' vertices, each placed in the view by its own
    weak-perspective camera, in ground-truth object units.

    Each set is mapped into the view frame, X = s R(q) V + (tx, ty, 0), with pred_camera for the
    prediction and gt_camera for the ground truth (both (7,) NDC cameras of the same crop). Depth is
    not observable under weak perspective, so each set's mean z is subtracted; x and y are kept, so
    a wrong image position or scale counts. Both sets are then divided by the GT scale s_g, which
    makes the number independent of the crop's size and expresses it in GT object units (the
    template sphere has radius 1). Result, with Euclidean (not squared) distances:

        (mean_{a in A} min_{b in B} |a - b| + mean_{b in B} min_{a in A} |a - b|) / 2

    It is invariant to a shift of either mesh along the viewing direction and to scaling a mesh by
    k while its camera scale is divided by k (the ambiguities of weak perspective).
    """
    def view_frame(vertices: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
        cam = WeakPerspectiveCamera.from_tensor(camera.double().reshape(1, 7))
        x = cam.transform(vertices.double()[None])[0]  # the NDC flip is an isometry: distances keep
        return x - x.new_tensor([0.0, 0.0, 1.0]) * x[:, 2:].mean()

    scale = float(gt_camera.reshape(-1)[0])
    if not scale > 0:
        raise ValueError(f"chamfer_3d: the GT camera scale must be positive, got {scale}")
    a = view_frame(pred_vertices, pred_camera.to(pred_vertices.device)) / scale
    b = view_frame(gt_vertices.to(pred_vertices.device), gt_camera.to(pred_vertices.device)) / scale
    distances = torch.cdist(a, b)  # (Va, Vb); meshes have hundreds of vertices
    return float(0.5 * (distances.min(dim=1).values.mean() + distances.min(dim=0).values.mean()))


# -- the registry ------------------------------------------------------------------------------------

MetricFn = Callable[[EvaluationContext], float]


class DatasetMetric(Protocol):
    """What a dataset-level metric's factory returns: fed every image, then asked for one number."""

    def update(self, ctx: EvaluationContext) -> None: ...

    def compute(self) -> tuple[float, int]: ...  # (value, number of images it used); ValueError if none


@dataclass
class DatasetMetricEnv:
    """What dataset-level metrics share during one evaluation: the config, the device, the dataset,
    one feature extractor and one reference-statistics object (built when first asked for), and a
    cache (e.g. novel views rendered once for both fid_10 and fid_12).

    feature_extractor  an nn.Module images (N, 3, 299, 299) in [0, 1] -> (N, D), or None = the
                       Inception of cfg.fid (meshinv.evaluation.fid.inception.build_inception)
    """

    cfg: EvaluationConfig
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dataset: Any = None
    data_dir: Optional[str] = None
    feature_extractor: Any = None
    cache: dict = field(default_factory=dict, repr=False)

    def extractor(self):
        if self.feature_extractor is None:
            from .fid import build_inception

            f = self.cfg.fid
            self.feature_extractor = build_inception(f.network, f.weights, f.allow_random_weights, self.device)
        return self.feature_extractor

    def feature_bank(self):
        """One FeatureBank for all FID metrics, so that their images share batches."""
        if "feature_bank" not in self.cache:
            from .fid import FeatureBank

            f = self.cfg.fid
            self.cache["feature_bank"] = FeatureBank(self.extractor(), f.batch_size, f.image_size, self.device)
        return self.cache["feature_bank"]

    def fid_reference(self):
        """The real-image statistics of FID_10 / FID_12 (meshinv.evaluation.fid.reference.reference_statistics)."""
        if "fid_reference" not in self.cache:
            from .fid import reference_statistics

            self.cache["fid_reference"] = reference_statistics(
                self.cfg.fid, self.extractor(), dataset=self.dataset, data_dir=self.data_dir, crop=self.cfg.crop,
                device=self.device)
        return self.cache["fid_reference"]


DatasetMetricFactory = Callable[[DatasetMetricEnv], DatasetMetric]


@dataclass(frozen=True)
class MetricInfo:
    name: str
    needs_gt: bool          # needs a dataset with ground truth (synthetic data)
    higher_is_better: bool
    description: str        # the first line of the function's docstring
    level: str = "image"    # "image": one value per image, averaged; "dataset": one value from all images
    needs_cad: bool = False  # needs a dataset with CAD models (PASCAL3D+)
    needs_camera: bool = False  # needs a dataset whose samples carry cameras (.info.has_cameras)
    within: Optional[float] = None  # report the fraction of images whose value is at most this
    unit: str = ""          # the value's unit, for names and the report (e.g. "deg")

    @property
    def needs_sample(self) -> bool:
        """Whether the metric reads the image's dataset sample (ground truth, camera or CAD model)."""
        return self.needs_gt or self.needs_camera or self.needs_cad


METRICS: dict[str, Callable] = {}   # name -> MetricFn (level "image") or DatasetMetricFactory ("dataset")
METRIC_INFO: dict[str, MetricInfo] = {}


def _register(name: str, fn: Callable, info: MetricInfo) -> None:
    if name in METRICS:
        raise ValueError(f"metric {name!r} is already registered")
    METRICS[name] = fn
    METRIC_INFO[name] = info


def _description(fn: Callable, name: str) -> str:
    return (fn.__doc__ or name).strip().splitlines()[0]


def register_metric(name: str, *, needs_gt: bool = False, higher_is_better: bool = True, needs_cad: bool = False,
                    needs_camera: bool = False, within: Optional[float] = None, unit: str = ""):
    """Decorator adding a per-image metric function to METRICS under `name`."""

    def decorator(fn: MetricFn) -> MetricFn:
        _register(name, fn, MetricInfo(name, needs_gt, higher_is_better, _description(fn, name), "image", needs_cad,
                                       needs_camera, within, unit))
        return fn

    return decorator


def register_dataset_metric(name: str, *, needs_gt: bool = False, higher_is_better: bool = False,
                            needs_cad: bool = False):
    """Decorator adding a dataset-level metric (a factory env -> DatasetMetric) to METRICS under `name`."""

    def decorator(factory: DatasetMetricFactory) -> DatasetMetricFactory:
        _register(name, factory, MetricInfo(name, needs_gt, higher_is_better, _description(factory, name), "dataset",
                                            needs_cad))
        return factory

    return decorator


def get_metric(name: str) -> Callable:
    """The metric function (or, for dataset-level metrics, factory) called `name`; an unknown name is
    an error listing the known ones."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; known metrics: {', '.join(sorted(METRICS))}")
    return METRICS[name]


# -- the metrics ---------------------------------------------------------------------------------------

@register_metric("mask_iou")
def mask_iou(ctx: EvaluationContext) -> float:
    """IoU of the rendered hard mask and the target mask in the input view."""
    return float(iou(ctx.pred_mask(), ctx.require_target_mask("mask_iou")))


@register_metric("full_mask_iou", needs_gt=True)
def full_mask_iou(ctx: EvaluationContext) -> float:
    """IoU of the rendered hard mask and the ground-truth full-object mask (occluders ignored)."""
    full = _as_image_mask(ctx.require_gt("full_mask", "full_mask_iou"), ctx.image_size, "gt['full_mask']")
    return float(iou(ctx.pred_mask(), full.to(ctx.device)))


@register_metric("novel_view_iou", needs_gt=True)
def novel_view_iou(ctx: EvaluationContext) -> float:
    """Mean silhouette IoU of prediction vs. ground-truth mesh over the turntable views."""
    gt = ctx.turntable("gt", "novel_view_iou")[1]
    return float(iou(ctx.turntable("pred", "novel_view_iou")[1], gt).mean())


@register_metric("chamfer_3d", needs_gt=True, higher_is_better=False)
def chamfer_3d(ctx: EvaluationContext) -> float:
    """Chamfer distance of predicted and GT vertices in the view frame, in GT object units.

    See weak_perspective_chamfer; the GT camera is the dataset sample's camera of the crop."""
    gt_vertices = ctx.require_gt("vertices", "chamfer_3d")
    return weak_perspective_chamfer(ctx.pred_vertices(), ctx.record.camera, gt_vertices,
                                    ctx.require_gt_camera("chamfer_3d"))


@register_metric("rotation_error_deg", needs_camera=True, higher_is_better=False, within=30.0, unit="deg")
def rotation_error_deg(ctx: EvaluationContext) -> float:
    """Angle (degrees) between the rotations of the final camera and the sample's (GT on synthetic data).

    The geodesic angle of meshinv.geometry.camera.rotation_angle_deg, in [0, 180]."""
    if ctx.gt_camera is None:
        raise MissingInputError("rotation_error_deg: needs the sample's camera (the ground truth on synthetic data)")
    return float(rotation_angle_deg(ctx.record.camera[3:].double(), ctx.gt_camera.reshape(-1)[3:].double()
                                    .to(ctx.record.camera.device)))


# -- appearance against the 3D ground truth (synthetic data) -------------------------------------------------
#
# The renders are compared on object pixels only: the union of the two silhouettes. The GT
# silhouette alone would not see a reconstruction that spills over the background (a too large or
# misplaced object would lose nothing there); on the union, a pixel that only one mesh covers
# compares that mesh's colour with the background, APPEARANCE_BACKGROUND, the same for both.
# Background pixels of both count for nothing, so the numbers do not depend on how much of the
# image the object fills.

def _unit_colors(image: torch.Tensor) -> torch.Tensor:
    return (image + 1) / 2   # [-1, 1] -> [0, 1]


def _input_views(ctx: EvaluationContext, metric: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(reconstruction, ground truth) in the input view in [0, 1], and the union of their silhouettes."""
    pred, pred_mask = ctx.pred_render()
    gt, gt_mask = ctx.gt_render(metric)
    return _unit_colors(pred), _unit_colors(gt), pred_mask | gt_mask


def _novel_views(ctx: EvaluationContext, metric: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """novel_view_iou's views of both meshes, textured, in [0, 1], and the union of their silhouettes."""
    ctx.require_gt("texture", metric)
    pred, pred_masks = ctx.turntable("pred", metric)
    gt, gt_masks = ctx.turntable("gt", metric)
    return _unit_colors(pred), _unit_colors(gt), pred_masks | gt_masks


def _capped_psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    return min(psnr(a, b, mask), PSNR_CEILING_DB)


@register_metric("psnr_input_view", needs_gt=True, unit="dB")
def psnr_input_view(ctx: EvaluationContext) -> float:
    """PSNR (dB) of the textured reconstruction vs. the GT mesh and texture in the input view, object pixels.

    Both are rendered at the record's size: the prediction with its camera, the ground truth with
    the sample's camera of the same crop. PSNR on [0, 1] colours over the union of the two
    silhouettes (the comment above); an exact match gives PSNR_CEILING_DB."""
    return _capped_psnr(*_input_views(ctx, "psnr_input_view"))


@register_metric("ssim_input_view", needs_gt=True)
def ssim_input_view(ctx: EvaluationContext) -> float:
    """SSIM of the textured reconstruction vs. the GT mesh and texture in the input view, object pixels.

    The renders of psnr_input_view; SSIM (Gaussian window 11, sigma 1.5; appearance.ssim_map) on
    the whole images, averaged over the union of the two silhouettes."""
    return ssim(*_input_views(ctx, "ssim_input_view"))


@register_metric("psnr_novel_views", needs_gt=True, unit="dB")
def psnr_novel_views(ctx: EvaluationContext) -> float:
    """Mean PSNR (dB) of the textured reconstruction vs. the GT mesh over novel_view_iou's turntable views.

    Each mesh centred at its vertex mean at novel_view_scale (meshinv.render.views), as
    novel_view_iou places them; per view over the union of the two silhouettes, each view's
    PSNR capped at PSNR_CEILING_DB, then averaged over the views."""
    pred, gt, masks = _novel_views(ctx, "psnr_novel_views")
    return sum(_capped_psnr(a, b, m) for a, b, m in zip(pred, gt, masks)) / len(masks)


@register_metric("ssim_novel_views", needs_gt=True)
def ssim_novel_views(ctx: EvaluationContext) -> float:
    """Mean SSIM of the textured reconstruction vs. the GT mesh over novel_view_iou's turntable views.

    The views of psnr_novel_views; per view, SSIM averaged over the union of the silhouettes, then
    averaged over the views."""
    pred, gt, masks = _novel_views(ctx, "ssim_novel_views")
    maps = ssim_map(pred, gt)  # all views in one pass
    return sum(masked_mean(m, mask, "ssim_novel_views") for m, mask in zip(maps, masks)) / len(masks)


def uv_texels(ctx: EvaluationContext, metric: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The predicted and the true texture at the true texture's texels that lie on the surface, in
    [0, 1] ((3, N) each), and which of those texels the input view sees ((N,) bool).

    The comparison is on the true texture's grid (gt['texture'], T x T; 256 on the synthetic data,
    twice the prior's 128): the prediction is read there as the renderer reads it, bilinearly
    (meshinv.render.texels.resample_texture), so the truth is never filtered. A texel is seen when
    its point on the GT mesh is visible under the sample's camera and lands on the target mask
    (the photo's visible object, occluders excluded), by the pseudo-GT rule
    (meshinv.render.texels.seen_texels, with the pseudo-GT defaults). Texels on no UV triangle are
    never drawn and are in neither set."""
    if "uv_texels" not in ctx.cache:
        truth = ctx.require_gt("texture", metric).to(ctx.device, torch.float32)
        vertices, camera = ctx.gt_vertices(metric), ctx.require_gt_camera(metric)
        mask = ctx.require_target_mask(metric)
        size = truth.shape[-1]
        if tuple(truth.shape) != (3, size, size):
            raise ValueError(f"gt['texture'] is {tuple(truth.shape)}, expected (3, T, T)")
        key = ("texel_surface", size)
        if key not in ctx.shared:  # one per evaluation: the texel layout depends on the size only
            ctx.shared[key] = texel_surface(ctx.template, size)
        surface = ctx.shared[key].to(ctx.device)
        seen, _ = seen_texels(mask[None, None].float(), camera.to(ctx.device, torch.float32).reshape(1, 7),
                              vertices[None], ctx.template, surface)
        prediction = resample_texture(ctx.template, ctx.record.texture.to(ctx.device, torch.float32)[None], size)[0]
        ctx.cache["uv_texels"] = (_unit_colors(prediction).reshape(3, -1)[:, surface.texel],
                                  _unit_colors(truth).reshape(3, -1)[:, surface.texel], seen[0])
    return ctx.cache["uv_texels"]


@register_metric("uv_error_seen", needs_gt=True, higher_is_better=False)
def uv_error_seen(ctx: EvaluationContext) -> float:
    """Mean absolute error (colours in [0, 1]) of the predicted vs. true UV texture, texels seen in the input view.

    See uv_texels: on the true texture's grid, averaged over the channels and the texels whose
    surface point the input view sees. Mean absolute error rather than RMSE, so that a few texels
    with a wrong colour (a stripe in the wrong place) do not outweigh a colour that is slightly off
    everywhere."""
    prediction, truth, seen = uv_texels(ctx, "uv_error_seen")
    return mean_absolute_error(prediction, truth, seen)


@register_metric("uv_error_unseen", needs_gt=True, higher_is_better=False)
def uv_error_unseen(ctx: EvaluationContext) -> float:
    """Mean absolute error (colours in [0, 1]) of the predicted vs. true UV texture, texels not seen in the input view.

    uv_error_seen over the other texels on the surface (hidden, grazing, occluded or off the
    mask): what the prior had to make up."""
    prediction, truth, seen = uv_texels(ctx, "uv_error_unseen")
    return mean_absolute_error(prediction, truth, ~seen)


def _cad_model(ctx: EvaluationContext, metric: str, normalize: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The image's CAD model in the voxel grid's frame (normalised, or as stored): (vertices (V, 3)
    float64, faces, voxels (R, R, R)), computed once per model for the whole evaluation (a handful
    serve every image)."""
    from .voxels import normalize_to_unit_cube, voxelize_mesh

    if ctx.dataset is None or not hasattr(ctx.dataset, "cad_mesh"):
        raise MissingInputError(f"{metric}: needs a dataset with CAD models (PASCAL3D+)")
    cad_index = int(ctx.require_gt("cad_index", metric))
    key = ("cad_model", cad_index, ctx.cfg.voxel_resolution, normalize)
    if key not in ctx.shared:
        vertices, faces = ctx.dataset.cad_mesh(cad_index)
        vertices, faces = vertices.to(ctx.device, torch.float64), faces.to(ctx.device)
        if normalize:
            vertices = normalize_to_unit_cube(vertices)
        elif vertices.abs().max() > 0.5:
            log.warning("%s: CAD model %d reaches outside the unit cube; the parts outside are not counted",
                        metric, cad_index)
        ctx.shared[key] = (vertices, faces, voxelize_mesh(vertices, faces, ctx.cfg.voxel_resolution))
    return ctx.shared[key]


@register_metric("iou_3d", needs_cad=True)
def iou_3d(ctx: EvaluationContext) -> float:
    """Voxel IoU (32^3) of the prediction and the image's CAD model, aligned by bounding box (PASCAL3D+)."""
    from .voxels import cad_iou_3d

    cad, faces, voxels = _cad_model(ctx, "iou_3d")
    return cad_iou_3d(ctx.pred_vertices(), ctx.template.faces, cad, faces, ctx.cfg.voxel_resolution, voxels)


class GlobalAlignmentIoU:
    """iou_3d_global: each image's box alignment (translation, scale) to its CAD model as stored is
    collected, the means are applied to every prediction, and the IoUs are averaged (CMR's
    eval_mean_iou.m; meshinv/evaluation/voxels.py)."""

    def __init__(self, env: DatasetMetricEnv):
        self.resolution = env.cfg.voxel_resolution
        self.items: list[tuple] = []   # (pred vertices, pred faces, CAD vertices, faces, voxels, translation, scale)

    def update(self, ctx: EvaluationContext) -> None:
        from .voxels import box_alignment

        cad, faces, voxels = _cad_model(ctx, "iou_3d_global", normalize=False)
        pred = ctx.pred_vertices().double()
        translation, scale = box_alignment(pred, cad)
        self.items.append((pred, ctx.template.faces, cad, faces, voxels, translation, scale))

    def compute(self) -> tuple[float, int]:
        from .voxels import cad_iou_3d

        if not self.items:
            raise ValueError("iou_3d_global: no image could be aligned")
        translation = torch.stack([item[5].cpu() for item in self.items]).mean(dim=0)
        scale = sum(item[6] for item in self.items) / len(self.items)
        values = [cad_iou_3d(pred, pred_faces, cad, faces, self.resolution, voxels, (translation, scale), False)
                  for pred, pred_faces, cad, faces, voxels, _, _ in self.items]
        return sum(values) / len(values), len(values)


@register_dataset_metric("iou_3d_global", higher_is_better=True, needs_cad=True)
def iou_3d_global(env: DatasetMetricEnv) -> DatasetMetric:
    """Voxel IoU with the CAD models, one box alignment (the mean over images) for all, as CMR evaluates."""
    return GlobalAlignmentIoU(env)


@register_dataset_metric("fid_1")
def fid_1(env: DatasetMetricEnv) -> DatasetMetric:
    """FID of masked inputs vs. masked reconstructions in the input view (black backgrounds, 299 x 299)."""
    from .fid import InputViewFID

    return InputViewFID(env)


@register_dataset_metric("fid_12")
def fid_12(env: DatasetMetricEnv) -> DatasetMetric:
    """FID of 12 views (azimuth 0, 30, ..., 330 about the canonical pose) vs. real-image statistics."""
    from .fid import FID12_AZIMUTHS, NovelViewFID

    return NovelViewFID(env, FID12_AZIMUTHS, "fid_12")


@register_dataset_metric("fid_10")
def fid_10(env: DatasetMetricEnv) -> DatasetMetric:
    """FID of the fid_12 views without azimuths 90 and 270 vs. real-image statistics."""
    from .fid import FID10_AZIMUTHS, NovelViewFID

    return NovelViewFID(env, FID10_AZIMUTHS, "fid_10")
