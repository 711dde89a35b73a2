"""Score an inversion results folder (meshinv/inversion/results.py) and write its report.

    run_evaluation(results_dir, dataset, template=..., cfg=..., device=...) -> EvaluationResult
    evaluate_image(ctx, names) -> one image's values and the reasons for missing ones
    evaluate_results(...)  -> (per_image, means), the numbers only
    write_outputs(result, out_dir, cfg) -> metrics.json, report.md, report_grid.png

An image folder is evaluated when it holds result.pt; a folder without one, or with a file that
cannot be read, is recorded as failed with its reason and the others go on. Dataset samples are
matched by image id and cropped at each record's image_size, so the ground truth lines up with what
the inversion saw.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from ..data.folder import FolderDataset, read_image
from ..data.sample import Sample
from ..data.synthetic import SyntheticDataset
from ..geometry.template import MeshTemplate
from ..inversion.results import RESULT_FILE, InversionRecord, load_record
from ..render.renderer import MeshRenderer
from ..render.views import render_turntable
from ..utils.images import save_grid
from ..utils.io import save_json, save_text
from .config import EvaluationConfig
from .metrics import METRIC_INFO, EvaluationContext, MissingInputError, get_metric

log = logging.getLogger(__name__)

# Files an inversion writes per image besides result.pt; any of them marks an image folder.
RESULT_IMAGE_FILES = ("input.png", "target_mask.png", "render.png", "pred_mask.png")


@dataclass
class EvaluationResult:
    """Everything one evaluation produced (metrics.json is its to_json())."""

    results_dir: str
    data_dir: Optional[str]
    metrics: list[str]                      # metrics computed (requested minus skipped)
    per_image: dict[str, dict[str, float]]  # image id -> metric -> value (images with a record)
    means: dict[str, Optional[float]]       # metric -> mean over the images that have it
    counts: dict[str, int]                  # metric -> images that have it
    skipped: dict[str, str]                 # metric -> why it was not computed for any image
    failed: dict[str, str]                  # image id -> why it could not be evaluated at all
    metric_errors: dict[str, dict[str, str]]  # image id -> metric -> why that metric is missing
    images: int                             # image folders found
    grid: list[tuple[str, torch.Tensor]] = field(default_factory=list, repr=False)  # (id, (K, 3, S, S))
    grid_columns: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        def finite(v):
            return v if v is not None and math.isfinite(v) else None  # JSON has no NaN

        return {
            "results_dir": self.results_dir, "data_dir": self.data_dir, "metrics": self.metrics,
            "means": {k: finite(v) for k, v in self.means.items()},
            "counts": {"images": self.images, "evaluated": len(self.per_image), "failed": len(self.failed),
                       "per_metric": self.counts},
            "higher_is_better": {m: METRIC_INFO[m].higher_is_better for m in self.metrics},
            "skipped": self.skipped, "failed": self.failed, "metric_errors": self.metric_errors,
            "per_image": {i: {k: finite(v) for k, v in values.items()} for i, values in self.per_image.items()},
        }


# -- inputs ------------------------------------------------------------------------------------------------

def find_result_ids(results_dir: str | os.PathLike) -> list[str]:
    """Sorted ids of the image folders in a results folder (with or without a result.pt)."""
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder not found: {root}")
    names = (RESULT_FILE,) + RESULT_IMAGE_FILES
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and any((p / n).is_file() for n in names))


def _open_split(root: str | os.PathLike, crop) -> FolderDataset:
    """A split folder as a dataset: SyntheticDataset (with ground truth) when it has gt/, else FolderDataset."""
    root = Path(root)
    return SyntheticDataset(root, crop) if (root / "gt").is_dir() else FolderDataset(root, crop)


def has_ground_truth(dataset) -> bool:
    return isinstance(dataset, SyntheticDataset)


class _SampleLookup:
    """Dataset samples by image id, cropped at any requested size (one shallow copy per size)."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.index = {image_id: i for i, image_id in enumerate(dataset.image_ids())}
        self.by_size: dict[int, object] = {}
        if getattr(dataset, "mirror", False):
            log.warning("the dataset mirrors its samples; evaluating on unmirrored ones")

    def get(self, image_id: str, size: int) -> Optional[Sample]:
        if image_id not in self.index:
            return None
        if size not in self.by_size:
            resized = self.dataset
            if hasattr(resized, "crop"):
                # Datasets read .crop and .mirror per item, so a copy with new settings needs no re-scan.
                resized = copy.copy(resized)
                resized.crop = dataclasses.replace(resized.crop, img_size=size)
                resized.mirror = False
            self.by_size[size] = resized
        return self.by_size[size][self.index[image_id]]


def read_mask_png(path: Path) -> torch.Tensor:
    """(1, H, W) float in {0, 1} from a mask image."""
    with Image.open(path) as image:
        mask = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    return torch.from_numpy((mask > 0.5).astype(np.float32))[None]


# -- evaluation --------------------------------------------------------------------------------------------

def _reason(error: BaseException, limit: int = 300) -> str:
    """One line for logs and metrics.json (some library errors run to paragraphs)."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _load_record(folder: Path) -> InversionRecord:
    try:
        return load_record(folder)
    except (FileNotFoundError, ValueError):
        raise  # already say what is wrong
    except Exception as e:  # noqa: BLE001 -- torch reports a damaged file in several ways
        raise ValueError(f"cannot read {folder / RESULT_FILE} ({_reason(e, 120)})") from None


def evaluate_image(ctx: EvaluationContext, names: list[str]) -> tuple[dict[str, float], dict[str, str]]:
    """Compute the metrics `names` for one image: (metric -> value, metric -> why it has none).
    A metric that fails or returns a non-finite number has a reason instead of a value."""
    values, errors = {}, {}
    image_id = ctx.record.image_id
    for name in names:
        try:
            with torch.no_grad():
                value = float(get_metric(name)(ctx))
            if not math.isfinite(value):
                raise ValueError(f"{name} returned {value}")
            values[name] = value
        except Exception as e:  # noqa: BLE001 -- recorded per image and metric
            errors[name] = _reason(e)
            level = logging.INFO if isinstance(e, MissingInputError) else logging.WARNING
            log.log(level, "%s: no %s (%s)", image_id, name, errors[name])
    return values, errors


def run_evaluation(results_dir: str | os.PathLike, dataset=None, *, template: MeshTemplate,
                   cfg: Optional[EvaluationConfig] = None, device: torch.device | str = "cpu") -> EvaluationResult:
    """Evaluate every image folder of `results_dir`.

    dataset: None (metrics from the result folders only), a split folder (opened with cfg.crop),
    or a FolderDataset / SyntheticDataset, whose crop settings are kept but img_size is set to each
    record's image_size. Metrics needing ground truth are skipped when the dataset has none.
    """
    cfg = cfg or EvaluationConfig()
    device = torch.device(device)
    template = template.to(device)
    results_dir = Path(results_dir)
    names = list(dict.fromkeys(cfg.metrics))
    for name in names:
        get_metric(name)  # an unknown name fails before any work
    ids = find_result_ids(results_dir)
    if cfg.limit is not None:
        ids = ids[:cfg.limit]
    data_dir = None
    if isinstance(dataset, (str, os.PathLike)):
        data_dir = str(dataset)
        dataset = _open_split(dataset, cfg.crop)
    elif dataset is not None:
        data_dir = str(getattr(dataset, "root", type(dataset).__name__))

    skipped = {}
    gt_available = dataset is not None and has_ground_truth(dataset)
    for name in names:
        if METRIC_INFO[name].needs_gt and not gt_available:
            skipped[name] = ("no dataset given (evaluation.data_dir / --data)" if dataset is None
                             else f"the dataset {data_dir} has no ground truth (synthetic data only)")
            log.info("skipping %s: %s", name, skipped[name])
    active = [n for n in names if n not in skipped]
    lookup = _SampleLookup(dataset) if dataset is not None else None
    if lookup is not None:
        unmatched = len(set(lookup.index) - set(ids))
        if unmatched and cfg.limit is None:
            log.info("%d dataset images have no result folder in %s", unmatched, results_dir)

    renderers: dict[int, MeshRenderer] = {}
    per_image, failed, metric_errors = {}, {}, {}
    grid, columns = [], []
    for image_id in tqdm(ids, desc="evaluate", unit="img"):
        folder = results_dir / image_id
        try:
            record = _load_record(folder)
            size = int(record.image_size)
            sample = lookup.get(image_id, size) if lookup is not None else None
            # The mask the inversion fitted; else the dataset's, cropped the same way.
            target_path = folder / "target_mask.png"
            target = read_mask_png(target_path) if target_path.is_file() else None
            if target is None and sample is not None:
                target = sample.mask
        except Exception as e:  # noqa: BLE001 -- one bad image must not stop the others
            failed[image_id] = _reason(e)
            log.warning("%s: not evaluated (%s)", image_id, failed[image_id])
            log.debug("%s", image_id, exc_info=True)
            continue
        renderer = renderers.setdefault(size, MeshRenderer(size))
        ctx = EvaluationContext(record, template, renderer, cfg, target_mask=target,
                                gt=sample.gt if sample is not None else {},
                                gt_camera=sample.camera if sample is not None else None, device=device)
        wanted, errors = active, {}
        if lookup is not None and sample is None:
            wanted = [n for n in active if not METRIC_INFO[n].needs_gt]
            errors = {n: f"image {image_id!r} is not in the dataset {data_dir}" for n in active if n not in wanted}
        values, more_errors = evaluate_image(ctx, wanted)
        errors.update(more_errors)
        per_image[image_id] = values
        if errors:
            metric_errors[image_id] = errors
        if len(grid) < cfg.grid_rows:
            try:
                row, columns = grid_row(folder, record, ctx, gt_available)
                grid.append((image_id, row))
            except Exception as e:  # noqa: BLE001 -- the report's pictures are not worth a failure
                log.warning("%s: no grid row (%s)", image_id, _reason(e))

    counts = {n: sum(n in v for v in per_image.values()) for n in active}
    means = {n: (float(np.mean([v[n] for v in per_image.values() if n in v])) if counts[n] else None)
             for n in active}
    for name in active:
        log.info("%s: %s over %d images", name, "n/a" if means[name] is None else f"{means[name]:.4f}", counts[name])
    if failed:
        log.warning("%d of %d images could not be evaluated (see metrics.json)", len(failed), len(ids))
    return EvaluationResult(str(results_dir), data_dir, active, per_image, means, counts, skipped, failed,
                            metric_errors, len(ids), grid, columns)


def evaluate_results(results_dir: str | os.PathLike, dataset=None, *, template: MeshTemplate,
                     cfg: Optional[EvaluationConfig] = None, device: torch.device | str = "cpu"
                     ) -> tuple[dict[str, dict[str, float]], dict[str, Optional[float]]]:
    """(per image: id -> metric -> value, means: metric -> mean); see run_evaluation."""
    result = run_evaluation(results_dir, dataset, template=template, cfg=cfg, device=device)
    return result.per_image, result.means


# -- the report ----------------------------------------------------------------------------------------

def _tile(path: Path, size: int) -> torch.Tensor:
    """(3, size, size) in [-1, 1] from an image file; mid grey (0) if it is missing."""
    if not path.is_file():
        return torch.zeros(3, size, size)
    image = torch.from_numpy(read_image(path)).permute(2, 0, 1)[None] * 2 - 1
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=image.shape[-1] > size)[0].clamp(-1, 1)


def grid_row(folder: Path, record: InversionRecord, ctx: EvaluationContext, with_gt: bool
             ) -> tuple[torch.Tensor, list[str]]:
    """One row of report_grid.png: input, render over input, the prediction's novel views, and (with
    ground truth) the GT mesh's. Returns ((K, 3, S, S) in [-1, 1] on CPU, column names)."""
    cfg = ctx.cfg
    size = cfg.grid_image_size
    renderer = MeshRenderer(size)
    views = len(cfg.grid_azimuths)
    tiles = [_tile(folder / "input.png", size), _tile(folder / "render.png", size)]
    columns = ["input", "reconstruction"] + [f"pred {a:g}" for a in cfg.grid_azimuths]
    with torch.no_grad():
        texture = record.texture.to(ctx.device, torch.float32)
        pred, _ = render_turntable(ctx.template, renderer, ctx.pred_vertices(), texture, cfg.grid_azimuths,
                                   scale=cfg.novel_view_scale, background=1.0)
        tiles.extend(pred.cpu())
        if with_gt:
            columns += [f"GT {a:g}" for a in cfg.grid_azimuths]
            if "vertices" in ctx.gt:
                gt_texture = ctx.gt.get("texture", torch.zeros(3, 8, 8)).to(ctx.device, torch.float32)
                gt, _ = render_turntable(ctx.template, renderer, ctx.gt["vertices"].to(ctx.device, torch.float32),
                                         gt_texture, cfg.grid_azimuths, scale=cfg.novel_view_scale, background=1.0)
                tiles.extend(gt.cpu())
            else:
                tiles.extend(torch.zeros(views, 3, size, size))
    return torch.stack(tiles), columns


def _format(value: Optional[float]) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def report_markdown(result: EvaluationResult, cfg: EvaluationConfig, grid_name: Optional[str]) -> str:
    lines = [f"# Evaluation of `{result.results_dir}`", ""]
    lines.append(f"{result.images} image folders: {len(result.per_image)} evaluated, {len(result.failed)} failed. "
                 f"Dataset: {f'`{result.data_dir}`' if result.data_dir else 'none (result folders only)'}.")
    lines += ["", "| metric | mean | images | better | what |", "| --- | --- | --- | --- | --- |"]
    for name in result.metrics:
        info = METRIC_INFO[name]
        lines.append(f"| {name} | {_format(result.means.get(name))} | {result.counts.get(name, 0)} | "
                     f"{'higher' if info.higher_is_better else 'lower'} | {info.description} |")
    if result.skipped:
        lines += ["", "Skipped:"] + [f"- {name}: {why}" for name, why in result.skipped.items()]

    scored = sorted((v["mask_iou"], i) for i, v in result.per_image.items() if "mask_iou" in v)
    if scored:
        worst = scored[:cfg.worst_count]
        others = [m for m in result.metrics if m != "mask_iou"]
        lines += ["", f"## Worst {len(worst)} images by mask IoU", "",
                  "| image | mask_iou | " + " | ".join(others) + " |",
                  "| --- | --- |" + " --- |" * len(others)]
        for value, image_id in worst:
            rest = [_format(result.per_image[image_id].get(m)) for m in others]
            lines.append(f"| {image_id} | {_format(value)} | " + " | ".join(rest) + " |")
    if result.failed:
        lines += ["", "## Failed images", ""] + [f"- {i}: {why}" for i, why in result.failed.items()]
    if result.metric_errors:
        lines += ["", "## Missing values", ""]
        lines += [f"- {i} {m}: {why}" for i, errors in result.metric_errors.items() for m, why in errors.items()]
    if grid_name:
        lines += ["", "## Reconstructions", "",
                  f"Columns: {', '.join(result.grid_columns)} (first {len(result.grid)} evaluated images, "
                  f"rows in id order: {', '.join(i for i, _ in result.grid)}).", "",
                  f"![reconstructions]({grid_name})"]
    return "\n".join(lines) + "\n"


def write_outputs(result: EvaluationResult, out_dir: str | os.PathLike, cfg: Optional[EvaluationConfig] = None
                  ) -> dict[str, Path]:
    """Write metrics.json, report.md and (when there are rows) report_grid.png into out_dir."""
    cfg = cfg or EvaluationConfig()
    out = Path(out_dir)
    paths = {"metrics": out / "metrics.json", "report": out / "report.md"}
    save_json(paths["metrics"], result.to_json())
    grid_name = None
    if result.grid:
        width = max(row.shape[0] for _, row in result.grid)
        rows = [torch.cat([row, row.new_zeros((width - row.shape[0],) + row.shape[1:])]) for _, row in result.grid]
        paths["grid"] = out / "report_grid.png"
        save_grid(paths["grid"], torch.cat(rows), nrow=width)
        grid_name = paths["grid"].name
    save_text(paths["report"], report_markdown(result, cfg, grid_name))
    return paths
