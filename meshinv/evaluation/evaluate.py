"""Score an inversion results folder (meshinv/inversion/results.py) and write its report.

    run_evaluation(results_dir, dataset, template=..., cfg=..., device=...) -> EvaluationResult
    evaluate_image(ctx, names) -> one image's values and the reasons for missing ones
    evaluate_results(...)  -> (per_image, means), the numbers only
    write_outputs(result, out_dir, cfg) -> metrics.json, report.md, report_grid.png

An image folder is evaluated when it holds result.pt; a folder without one, or with a file that
cannot be read, is recorded as failed with its reason and the others go on. Images that the
inversion itself failed on (its summary.json records them with their reasons) are counted and listed
apart, so that the report accounts for every image the inversion was given. Dataset samples are
matched by image id and cropped at each record's image_size, so the ground truth lines up with what
the inversion saw.

Per-image metrics are averaged over the images that have them. Dataset-level metrics (the FIDs) see
every evaluated image once and give one number; an image they cannot use is listed with its reason,
and a metric that cannot be computed at all (e.g. missing Inception weights) is listed as skipped.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data.datasets import open_dataset
from ..data.sample import Sample
from ..data.synthetic import SyntheticDataset
from ..geometry.template import MeshTemplate
from ..inversion.results import RESULT_FILE, InversionRecord, load_record, saved_run_config
from ..inversion.run import SUMMARY_FILE
from ..render.settings import Renderer, make_renderer
from ..render.views import render_turntable
from ..utils.images import read_image_tensor, read_mask, save_grid
from ..utils.io import save_json, save_text
from .config import EvaluationConfig
from .metrics import METRIC_INFO, DatasetMetricEnv, EvaluationContext, MissingInputError, get_metric

log = logging.getLogger(__name__)

# Files an inversion writes per image besides result.pt; any of them marks an image folder.
RESULT_IMAGE_FILES = ("input.png", "target_mask.png", "render.png", "pred_mask.png")

# The paper's numbers for report.md (MeshInversion, ECCV 2022: Table 1, CUB; Table 2, PASCAL3D+ cars).
# None = not verified against the paper's text from this project's sources: the report says so
# instead of showing a number from memory.
PAPER_RESULTS: dict[str, dict[str, Optional[float]]] = {
    "cub": {"mask_iou": None, "fid_1": None, "fid_10": None, "fid_12": None},
    "p3d": {"mask_iou": None, "fid_1": None, "fid_10": None, "fid_12": None, "iou_3d": None},
}


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
    dataset_kind: Optional[str] = None      # cub, p3d, synthetic, folder (None: no dataset)
    fid_network: Optional[str] = None       # the Inception the FIDs were computed with
    dataset_errors: dict[str, str] = field(default_factory=dict)  # dataset-level metric -> why it has no value
    inversion_failed: dict[str, str] = field(default_factory=dict)  # image id -> why the inversion failed on it
    grid: list[tuple[str, torch.Tensor]] = field(default_factory=list, repr=False)  # (id, (K, 3, S, S))
    grid_columns: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        def finite(v):
            return v if v is not None and math.isfinite(v) else None  # JSON has no NaN

        return {
            "results_dir": self.results_dir, "data_dir": self.data_dir, "metrics": self.metrics,
            "means": {k: finite(v) for k, v in self.means.items()},
            "counts": {"images": self.images, "evaluated": len(self.per_image), "failed": len(self.failed),
                       "inversion_failed": len(self.inversion_failed), "per_metric": self.counts},
            "higher_is_better": {m: METRIC_INFO[m].higher_is_better for m in self.metrics},
            "dataset_level": [m for m in self.metrics if METRIC_INFO[m].level == "dataset"],
            "dataset_kind": self.dataset_kind, "fid_network": self.fid_network, "dataset_errors": self.dataset_errors,
            "skipped": self.skipped, "failed": self.failed, "inversion_failed": self.inversion_failed,
            "metric_errors": self.metric_errors,
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


def inversion_failures(results_dir: str | os.PathLike) -> dict[str, str]:
    """{image id: reason} for the images that the inversion's summary.json records as failed and that
    have no result; {} when there is no readable summary (e.g. results written by the library call)."""
    path = Path(results_dir) / SUMMARY_FILE
    if not path.is_file():
        return {}
    try:
        images = json.loads(path.read_text()).get("images")
    except (OSError, ValueError, AttributeError) as e:
        log.warning("%s: cannot read the inversion's summary (%s); its failed images are not counted", path, e)
        return {}
    if not isinstance(images, dict):
        return {}
    return {str(image_id): str(entry.get("reason", "")) for image_id, entry in sorted(images.items())
            if isinstance(entry, dict) and entry.get("status") == "failed"
            and not (Path(results_dir) / str(image_id) / RESULT_FILE).is_file()}


def inversion_crop(results_dir: str | os.PathLike, crop):
    """`crop` with the padding and mask threshold the inversion used (read from the results'
    config.yaml), so that ground-truth masks are cut and binarised as its targets were; `crop`
    itself when the folder records none."""
    used = ((saved_run_config(results_dir) or {}).get("inversion") or {}).get("crop") or {}
    changes = {key: used[key] for key in ("padding", "mask_threshold") if key in used and used[key] != getattr(crop, key)}
    if changes:
        log.info("using the inversion's crop settings %s recorded in %s (evaluation.crop has %s)", changes,
                 results_dir, {key: getattr(crop, key) for key in changes})
    return dataclasses.replace(crop, **changes)


def _open_split(root: str | os.PathLike, crop, split: Optional[str] = None):
    """A dataset folder of any kind (meshinv.data.datasets.open_dataset): a synthetic split (with
    ground truth) when it has gt/, a plain image folder, CUB or PASCAL3D+."""
    return open_dataset(root, crop, split=split)


def has_ground_truth(dataset) -> bool:
    return isinstance(dataset, SyntheticDataset)


def has_cad_models(dataset) -> bool:
    return callable(getattr(dataset, "cad_mesh", None))


def _unavailable(name: str, dataset, data_dir: Optional[str]) -> Optional[str]:
    """Why metric `name` cannot run with this dataset, or None."""
    info = METRIC_INFO[name]
    if info.needs_gt and not (dataset is not None and has_ground_truth(dataset)):
        return ("no dataset given (evaluation.data_dir / --data)" if dataset is None
                else f"the dataset {data_dir} has no ground truth (synthetic data only)")
    if info.needs_cad and not (dataset is not None and has_cad_models(dataset)):
        return ("no dataset given (evaluation.data_dir / --data)" if dataset is None
                else f"the dataset {data_dir} has no CAD models (PASCAL3D+ only)")
    return None


def _dataset_kind(dataset) -> Optional[str]:
    if dataset is None:
        return None
    from .fid import dataset_kind

    return dataset_kind(dataset)


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
                   cfg: Optional[EvaluationConfig] = None, device: torch.device | str = "cpu",
                   feature_extractor: Optional[torch.nn.Module] = None) -> EvaluationResult:
    """Evaluate every image folder of `results_dir`.

    dataset: None (metrics from the result folders only), a dataset folder of any kind (opened with
    cfg.crop, whose padding and mask threshold are the inversion's where the results record them,
    and cfg.split), or a dataset object, whose crop settings are kept but img_size is set to
    each record's image_size. Metrics needing ground truth or CAD models are skipped when the dataset
    has none. feature_extractor: replaces the FID Inception (tests: any module images (N, 3, 299, 299)
    in [0, 1] -> (N, D)).
    """
    cfg = cfg or EvaluationConfig()
    device = torch.device(device)
    template = template.to(device)
    results_dir = Path(results_dir)
    cfg = dataclasses.replace(cfg, crop=inversion_crop(results_dir, cfg.crop))
    names = list(dict.fromkeys(cfg.metrics))
    for name in names:
        get_metric(name)  # an unknown name fails before any work
    inversion_failed = inversion_failures(results_dir)
    if inversion_failed:
        log.warning("%d images failed in the inversion (listed in metrics.json and report.md, reasons from %s)",
                    len(inversion_failed), results_dir / SUMMARY_FILE)
    # A folder the failed inversion left behind (without result.pt) is that failure, not an evaluation one.
    ids = [i for i in find_result_ids(results_dir) if i not in inversion_failed]
    if cfg.limit is not None:
        ids = ids[:cfg.limit]
    data_dir = None
    if isinstance(dataset, (str, os.PathLike)):
        data_dir = str(dataset)
        dataset = _open_split(dataset, cfg.crop, cfg.split)
    elif dataset is not None:
        data_dir = str(getattr(dataset, "root", type(dataset).__name__))

    skipped = {}
    for name in names:
        why = _unavailable(name, dataset, data_dir)
        if why:
            skipped[name] = why
            log.info("skipping %s: %s", name, skipped[name])
    gt_available = dataset is not None and has_ground_truth(dataset)
    lookup = _SampleLookup(dataset) if dataset is not None else None
    if lookup is not None:
        unmatched = len(set(lookup.index) - set(ids))
        if unmatched and cfg.limit is None:
            log.info("%d dataset images have no result folder in %s", unmatched, results_dir)

    # Dataset-level metrics: built now, so that a missing network or reference fails before the loop.
    env = DatasetMetricEnv(cfg, device, dataset, data_dir, feature_extractor)
    accumulators = {}
    for name in names:
        if name in skipped or METRIC_INFO[name].level != "dataset":
            continue
        try:
            accumulators[name] = get_metric(name)(env)
        except Exception as e:  # noqa: BLE001 -- e.g. missing weights: the other metrics go on
            skipped[name] = _reason(e, 600)
            log.warning("skipping %s: %s", name, skipped[name])
            log.debug("%s", name, exc_info=True)
    active = [n for n in names if n not in skipped]
    per_image_names = [n for n in active if METRIC_INFO[n].level == "image"]

    renderers: dict[int, Renderer] = {}
    shared: dict = {}
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
            target = torch.from_numpy(read_mask(target_path))[None] if target_path.is_file() else None
            if target is None and sample is not None:
                target = sample.mask
            input_path = folder / "input.png"
            image = read_image_tensor(input_path) if input_path.is_file() else None
            if image is None and sample is not None:
                image = sample.image
        except Exception as e:  # noqa: BLE001 -- one bad image must not stop the others
            failed[image_id] = _reason(e)
            log.warning("%s: not evaluated (%s)", image_id, failed[image_id])
            log.debug("%s", image_id, exc_info=True)
            continue
        renderer = renderers.setdefault(size, make_renderer(size))
        ctx = EvaluationContext(record, template, renderer, cfg, target_mask=target,
                                gt=sample.gt if sample is not None else {},
                                gt_camera=sample.camera if sample is not None else None, input_image=image,
                                dataset=dataset, device=device, shared=shared)
        wanted, errors = per_image_names, {}
        if lookup is not None and sample is None:
            needs_sample = [n for n in active if METRIC_INFO[n].needs_gt or METRIC_INFO[n].needs_cad]
            wanted = [n for n in per_image_names if n not in needs_sample]
            errors = {n: f"image {image_id!r} is not in the dataset {data_dir}" for n in needs_sample}
        values, more_errors = evaluate_image(ctx, wanted)
        errors.update(more_errors)
        for name, accumulator in accumulators.items():
            if name in errors:
                continue
            try:
                with torch.no_grad():
                    accumulator.update(ctx)
            except Exception as e:  # noqa: BLE001 -- this image is left out of that metric
                errors[name] = _reason(e)
                level = logging.INFO if isinstance(e, MissingInputError) else logging.WARNING
                log.log(level, "%s: left out of %s (%s)", image_id, name, errors[name])
        per_image[image_id] = values
        if errors:
            metric_errors[image_id] = errors
        if len(grid) < cfg.grid_rows:
            try:
                row, columns = grid_row(folder, record, ctx, gt_available)
                grid.append((image_id, row))
            except Exception as e:  # noqa: BLE001 -- the report's pictures are not worth a failure
                log.warning("%s: no grid row (%s)", image_id, _reason(e))

    counts = {n: sum(n in v for v in per_image.values()) for n in per_image_names}
    means = {n: (float(np.mean([v[n] for v in per_image.values() if n in v])) if counts[n] else None)
             for n in per_image_names}
    dataset_errors = {}
    for name, accumulator in accumulators.items():
        try:
            with torch.no_grad():
                value, used = accumulator.compute()
            if not math.isfinite(value):
                raise ValueError(f"{name} is {value}")
            means[name], counts[name] = float(value), int(used)
        except Exception as e:  # noqa: BLE001 -- recorded in metrics.json and the report
            means[name], counts[name] = None, 0
            dataset_errors[name] = _reason(e)
            log.warning("%s: no value (%s)", name, dataset_errors[name])
    means = {n: means[n] for n in active}
    counts = {n: counts[n] for n in active}
    for name in active:
        log.info("%s: %s over %d images", name, "n/a" if means[name] is None else f"{means[name]:.4f}", counts[name])
    if failed:
        log.warning("%d of %d images could not be evaluated (see metrics.json)", len(failed), len(ids))
    fid_network = None
    if accumulators and env.feature_extractor is not None:
        from .fid import network_name

        fid_network = network_name(env.feature_extractor)
    return EvaluationResult(str(results_dir), data_dir, active, per_image, means, counts, skipped, failed,
                            metric_errors, len(ids), dataset_kind=_dataset_kind(dataset), fid_network=fid_network,
                            dataset_errors=dataset_errors, inversion_failed=inversion_failed, grid=grid,
                            grid_columns=columns)


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
    image = read_image_tensor(path)[None]
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=image.shape[-1] > size)[0].clamp(-1, 1)


def grid_row(folder: Path, record: InversionRecord, ctx: EvaluationContext, with_gt: bool
             ) -> tuple[torch.Tensor, list[str]]:
    """One row of report_grid.png: input, render over input, the prediction's novel views, and (with
    ground truth) the GT mesh's. Returns ((K, 3, S, S) in [-1, 1] on CPU, column names)."""
    cfg = ctx.cfg
    size = cfg.grid_image_size
    renderer = make_renderer(size)
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


def paper_comparison(result: EvaluationResult) -> list[str]:
    """report.md lines putting our numbers beside the paper's (CUB and PASCAL3D+ only)."""
    paper = PAPER_RESULTS.get(result.dataset_kind or "")
    if paper is None:
        return []
    lines = ["", "## Beside the paper (MeshInversion, ECCV 2022)", "",
             "| metric | ours | paper |", "| --- | --- | --- |"]
    for name, value in paper.items():
        ours = _format(result.means.get(name)) if name in result.metrics else "not computed"
        lines.append(f"| {name} | {ours} | {'n/a (not verified)' if value is None else f'{value:g}'} |")
    notes = ["The paper's FIDs come from the original code, which uses torchvision's ImageNet Inception; "
             "they are comparable with ours only when evaluation.fid.network is torchvision."]
    if any(v is None for v in paper.values()):
        notes.append("n/a (not verified): the paper's number has not been checked against its text, so none is shown.")
    return lines + [""] + notes


def report_markdown(result: EvaluationResult, cfg: EvaluationConfig, grid_name: Optional[str]) -> str:
    lines = [f"# Evaluation of `{result.results_dir}`", ""]
    total = result.images + len(result.inversion_failed)
    lines.append(f"{total} images: {len(result.per_image)} evaluated, {len(result.inversion_failed)} failed in the "
                 f"inversion, {len(result.failed)} could not be evaluated. "
                 f"Dataset: {f'`{result.data_dir}`' if result.data_dir else 'none (result folders only)'}.")
    lines += ["", "| metric | value | images | better | what |", "| --- | --- | --- | --- | --- |"]
    for name in result.metrics:
        info = METRIC_INFO[name]
        scope = "one value from all images" if info.level == "dataset" else "mean over images"
        lines.append(f"| {name} | {_format(result.means.get(name))} | {result.counts.get(name, 0)} | "
                     f"{'higher' if info.higher_is_better else 'lower'} | {info.description} ({scope}) |")
    if result.fid_network:
        lines += ["", f"FIDs computed with the `{result.fid_network}` Inception."]
    if result.skipped:
        lines += ["", "Skipped:"] + [f"- {name}: {why}" for name, why in result.skipped.items()]
    if result.dataset_errors:
        lines += ["", "No value:"] + [f"- {name}: {why}" for name, why in result.dataset_errors.items()]
    lines += paper_comparison(result)

    scored = sorted((v["mask_iou"], i) for i, v in result.per_image.items() if "mask_iou" in v)
    if scored:
        worst = scored[:cfg.worst_count]
        others = [m for m in result.metrics if m != "mask_iou" and METRIC_INFO[m].level == "image"]
        lines += ["", f"## Worst {len(worst)} images by mask IoU", "",
                  "| image | mask_iou | " + " | ".join(others) + " |",
                  "| --- | --- |" + " --- |" * len(others)]
        for value, image_id in worst:
            rest = [_format(result.per_image[image_id].get(m)) for m in others]
            lines.append(f"| {image_id} | {_format(value)} | " + " | ".join(rest) + " |")
    if result.inversion_failed:
        lines += ["", "## Images the inversion failed on", ""]
        lines += [f"- {i}: {why}" for i, why in result.inversion_failed.items()]
    if result.failed:
        lines += ["", "## Images that could not be evaluated", ""] + [f"- {i}: {why}" for i, why in result.failed.items()]
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
