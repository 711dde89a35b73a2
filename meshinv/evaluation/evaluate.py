"""Score an inversion results folder (meshinv/inversion/results.py): the per-image metric loop.

    run_evaluation(results_dir, dataset, template=..., cfg=..., device=...) -> EvaluationResult
    evaluate_image(ctx, names) -> one image's values and the reasons for missing ones
    evaluate_results(...)  -> (per_image, means), the numbers only

What it uses, one concern per module:
    results_folder  the image folders, the inversion's failures, one image's record and images
    crops           the crop each result was made with (its record's, else the run's config.yaml)
    samples         the dataset's samples by image id at that crop, and what the dataset can give
    grid            report_grid.png's rows
    distribution    median, 95th percentile and fraction within a threshold of a per-image metric
    inversion_facts each result's starting camera source, its score and time, and their summary
    report          EvaluationResult and its files (write_outputs: metrics.json, report.md, the grid)

An image folder is evaluated when it holds result.pt; a folder without one, or with a file that
cannot be read, is recorded as failed with its reason and the others go on. Images that the
inversion itself failed on (its summary.json records them with their reasons) are counted and listed
apart, so that the report accounts for every image the inversion was given. Dataset samples are
matched by image id and cut with each record's crop, so the ground truth lines up with what the
inversion saw.

Per-image metrics are averaged over the images that have them; their median and 95th percentile
come from meshinv.evaluation.distribution. Each result's starting camera and inversion time are
collected (meshinv.evaluation.inversion_facts). Dataset-level metrics (the FIDs) see every evaluated
image once and give one number; an image they cannot use is listed with its reason, and a metric
that cannot be computed at all (e.g. missing Inception weights) is listed as skipped.

Errors: each step catches only what it can raise (a missing or unreadable file, a DataError, a
missing weight file), except one: measure(), which runs one metric on one image, records whatever
that metric raises against that image and metric, because metrics are anyone's code (the registry)
and one image's failure must not stop the others.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from tqdm import tqdm

from ..geometry.template import MeshTemplate
from ..inversion.output import SUMMARY_FILE
from ..render.settings import make_renderer
from ..utils.errors import error_reason
from .config import EvaluationConfig
from .crops import inversion_crop, record_crop
from .distribution import distribution
from .grid import grid_row
from .inversion_facts import record_facts
from .metrics import METRIC_INFO, DatasetMetricEnv, EvaluationContext, MissingInputError, get_metric
from .report import EvaluationResult
from .results_folder import find_result_ids, inversion_failures, inversion_summary, read_result, summary_records
from .samples import DatasetOpener, SampleSource, _dataset_kind, has_ground_truth, metric_unavailable

log = logging.getLogger(__name__)

__all__ = ["run_evaluation", "evaluate_image", "evaluate_results", "measure", "EvaluationResult", "inversion_crop"]


def measure(image_id: str, name: str, compute: Callable[[], Optional[float]]) -> tuple[Optional[float], Optional[str]]:
    """Run metric `name` on one image: (value, None), or (None, why) when it fails or its value is not
    finite. compute() may return None (a dataset-level metric's update). The one place in the
    evaluation that catches any error (see the module doc); a missing input is logged as info."""
    try:
        with torch.no_grad():
            value = compute()
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{name} returned {value}")
        return value, None
    except Exception as e:  # noqa: BLE001 -- recorded against this image and metric; the others go on
        why = error_reason(e, 300)
        log.log(logging.INFO if isinstance(e, MissingInputError) else logging.WARNING, "%s: no %s (%s)",
                image_id, name, why)
        return None, why


def evaluate_image(ctx: EvaluationContext, names: list[str]) -> tuple[dict[str, float], dict[str, str]]:
    """Compute the metrics `names` for one image: (metric -> value, metric -> why it has none).
    A metric that fails or returns a non-finite number has a reason instead of a value."""
    values, errors = {}, {}
    for name in names:
        value, why = measure(ctx.record.image_id, name, lambda: float(get_metric(name)(ctx)))
        if why is None:
            values[name] = value
        else:
            errors[name] = why
    return values, errors


def _measure_image(ctx: EvaluationContext, names: list[str], accumulators: dict, missing: dict[str, str]
                   ) -> tuple[dict[str, float], dict[str, str]]:
    """One image's values of the per-image metrics `names`, and its update of each dataset-level
    metric, except for the metrics `missing` gives a reason for: (values, metric -> why it has none)."""
    values, errors = evaluate_image(ctx, [n for n in names if n not in missing])
    errors = {**missing, **errors}
    for name, accumulator in accumulators.items():
        if name not in errors:
            _, why = measure(ctx.record.image_id, name, lambda: accumulator.update(ctx))
            if why is not None:
                errors[name] = why
    return values, errors


def _start_dataset_metrics(names: list[str], skipped: dict[str, str], env: DatasetMetricEnv) -> dict:
    """name -> accumulator for the dataset-level metrics, built before the loop so that a missing
    network or reference fails before any work; one that cannot be built is added to `skipped`."""
    accumulators = {}
    for name in names:
        if name in skipped or METRIC_INFO[name].level != "dataset":
            continue
        try:
            accumulators[name] = get_metric(name)(env)
        except (ImportError, OSError, ValueError) as e:  # missing weights or package, no reference data
            skipped[name] = error_reason(e, 600)
            log.warning("skipping %s: %s", name, skipped[name])
            log.debug("%s", name, exc_info=True)
    return accumulators


def _finish_dataset_metrics(accumulators: dict) -> tuple[dict[str, Optional[float]], dict[str, int], dict[str, str]]:
    """(values, images used, why a metric has no value) of the dataset-level metrics. compute()
    raises ValueError when it has no value (too few images, singular statistics)."""
    values, counts, errors = {}, {}, {}
    for name, accumulator in accumulators.items():
        values[name], counts[name] = None, 0
        try:
            with torch.no_grad():
                value, used = accumulator.compute()
            if not math.isfinite(value):
                raise ValueError(f"{name} is {value}")
            values[name], counts[name] = float(value), int(used)
        except ValueError as e:
            errors[name] = error_reason(e, 300)
            log.warning("%s: no value (%s)", name, errors[name])
    return values, counts, errors


def run_evaluation(results_dir: str | os.PathLike, dataset: None | str | os.PathLike | DatasetOpener = None, *,
                   template: MeshTemplate, cfg: Optional[EvaluationConfig] = None, device: torch.device | str = "cpu",
                   feature_extractor: Optional[torch.nn.Module] = None) -> EvaluationResult:
    """Evaluate every image folder of `results_dir`.

    dataset: None (metrics from the result folders only), a dataset folder of any kind (split
    cfg.split), or a function that opens a dataset with a given CropConfig. Each sample is cut with
    its record's crop (meshinv.evaluation.crops); the dataset opened with cfg.crop (its padding and
    mask threshold the inversion's where the folder's config.yaml records them) serves the metrics'
    capabilities, CAD models and FID reference. Metrics needing ground truth or CAD models are
    skipped when the dataset has none. feature_extractor: replaces the FID Inception (tests: any
    module images (N, 3, 299, 299) in [0, 1] -> (N, D)).
    """
    cfg = cfg or EvaluationConfig()
    device = torch.device(device)
    template = template.to(device)
    results_dir = Path(results_dir)
    cfg = dataclasses.replace(cfg, crop=inversion_crop(results_dir, cfg.crop))
    names = list(dict.fromkeys(cfg.metrics))
    for name in names:
        get_metric(name)  # an unknown name fails before any work
    summary = inversion_summary(results_dir)
    inversion_failed = inversion_failures(results_dir, summary)
    left_out, random_weights = summary_records(summary, "left_out"), summary_records(summary, "random_weights")
    for term, why in {**left_out, **random_weights}.items():
        log.warning("the inversion's loss term %r was not the paper's: %s", term, why)
    if inversion_failed:
        log.warning("%d images failed in the inversion (listed in metrics.json and report.md, reasons from %s)",
                    len(inversion_failed), results_dir / SUMMARY_FILE)
    # A folder the failed inversion left behind (without result.pt) is that failure, not an evaluation one.
    ids = [i for i in find_result_ids(results_dir) if i not in inversion_failed]
    if cfg.limit is not None:
        ids = ids[:cfg.limit]
    samples = SampleSource.of(dataset, cfg.crop, cfg.split)
    dataset, data_dir = (samples.dataset, samples.data_dir) if samples is not None else (None, None)

    skipped = {}
    for name in names:
        why = metric_unavailable(name, dataset, data_dir)
        if why:
            skipped[name] = why
            log.info("skipping %s: %s", name, skipped[name])
    gt_available = dataset is not None and has_ground_truth(dataset)
    if samples is not None:
        unmatched = len(set(samples.index) - set(ids))
        if unmatched and cfg.limit is None:
            log.info("%d dataset images have no result folder in %s", unmatched, results_dir)

    env = DatasetMetricEnv(cfg, device, dataset, data_dir, feature_extractor)
    accumulators = _start_dataset_metrics(names, skipped, env)
    active = [n for n in names if n not in skipped]
    per_image_names = [n for n in active if METRIC_INFO[n].level == "image"]
    needs_sample = [n for n in active if METRIC_INFO[n].needs_sample]

    renderers: dict[int, Renderer] = {}
    shared: dict = {}
    per_image, failed, metric_errors, inversion = {}, {}, {}, {}
    grid, columns = [], []
    for image_id in tqdm(ids, desc="evaluate", unit="img"):
        folder = results_dir / image_id
        try:
            result = read_result(folder)
            sample = samples.get(image_id, record_crop(result.record, cfg.crop)) if samples is not None else None
        except (OSError, ValueError) as e:  # a missing or unreadable file or sample (DataError is a ValueError)
            failed[image_id] = error_reason(e, 300)
            log.warning("%s: not evaluated (%s)", image_id, failed[image_id])
            log.debug("%s", image_id, exc_info=True)
            continue
        record, size = result.record, int(result.record.image_size)
        inversion[image_id] = record_facts(record)
        # The mask and input the inversion fitted; else the dataset's, cut the same way.
        target = result.target_mask if result.target_mask is not None or sample is None else sample.mask
        image = result.input_image if result.input_image is not None or sample is None else sample.image
        ctx = EvaluationContext(record, template, renderers.setdefault(size, make_renderer(size)), cfg,
                                target_mask=target, gt=sample.gt if sample is not None else {},
                                gt_camera=sample.camera if sample is not None else None, input_image=image,
                                dataset=dataset, device=device, shared=shared)
        missing = ({n: f"image {image_id!r} is not in the dataset {data_dir}" for n in needs_sample}
                   if samples is not None and sample is None else {})
        per_image[image_id], errors = _measure_image(ctx, per_image_names, accumulators, missing)
        if errors:
            metric_errors[image_id] = errors
        if len(grid) < cfg.grid_rows:
            try:
                row, columns = grid_row(folder, ctx, gt_available)
                grid.append((image_id, row))
            except (OSError, ValueError) as e:  # the report's pictures are not worth a failure
                log.warning("%s: no grid row (%s)", image_id, error_reason(e, 300))

    values = {n: [v[n] for v in per_image.values() if n in v] for n in per_image_names}
    counts = {n: len(values[n]) for n in per_image_names}
    means = {n: float(np.mean(values[n])) if values[n] else None for n in per_image_names}
    spread = {n: distribution(values[n], METRIC_INFO[n]) for n in per_image_names if values[n]}
    dataset_values, dataset_counts, dataset_errors = _finish_dataset_metrics(accumulators)
    means.update(dataset_values)
    counts.update(dataset_counts)
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
                            dataset_errors=dataset_errors, inversion_failed=inversion_failed,
                            inversion_left_out=left_out, inversion_random_weights=random_weights, grid=grid,
                            grid_columns=columns, distribution=spread, inversion=inversion)


def evaluate_results(results_dir: str | os.PathLike, dataset=None, *, template: MeshTemplate,
                     cfg: Optional[EvaluationConfig] = None, device: torch.device | str = "cpu"
                     ) -> tuple[dict[str, dict[str, float]], dict[str, Optional[float]]]:
    """(per image: id -> metric -> value, means: metric -> mean); see run_evaluation."""
    result = run_evaluation(results_dir, dataset, template=template, cfg=cfg, device=device)
    return result.per_image, result.means
