"""What an evaluation produced (EvaluationResult) and its files: metrics.json (every number, count
and reason, the per-image metrics' medians and 95th percentiles, the results' starting cameras and
times), report.md (the values, where the starting cameras came from, the worst images, every image
that failed and why, the grid) and report_grid.png."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from ..utils.images import save_grid
from ..utils.io import save_json, save_text
from .config import EvaluationConfig
from .distribution import PERCENTILE_DEFINITION, within_key
from .inversion_facts import InversionSummary
from .metrics import METRIC_INFO


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
    # The inversion's loss where it was not the paper's (its summary.json): term -> why
    inversion_left_out: dict[str, str] = field(default_factory=dict)
    inversion_random_weights: dict[str, str] = field(default_factory=dict)
    grid: list[tuple[str, torch.Tensor]] = field(default_factory=list, repr=False)  # (id, (K, 3, S, S))
    grid_columns: list[str] = field(default_factory=list)
    # per-image metric -> {"median", "p95"[, "within_30deg"]} (meshinv.evaluation.distribution)
    distribution: dict[str, dict[str, float]] = field(default_factory=dict)
    # image id -> its camera source, seconds[, camera_init_score] (meshinv.evaluation.inversion_facts)
    inversion: dict[str, dict] = field(default_factory=dict)

    @property
    def inversion_summary(self) -> InversionSummary:
        return InversionSummary.of(self.inversion)

    def to_json(self) -> dict:
        def finite(v):
            return v if v is not None and math.isfinite(v) else None  # JSON has no NaN

        return {
            "results_dir": self.results_dir, "data_dir": self.data_dir, "metrics": self.metrics,
            "means": {k: finite(v) for k, v in self.means.items()},
            "counts": {"images": self.images, "evaluated": len(self.per_image), "failed": len(self.failed),
                       "inversion_failed": len(self.inversion_failed), "per_metric": self.counts},
            "distribution": self.distribution, "percentiles": PERCENTILE_DEFINITION,
            "inversion": {**self.inversion_summary.to_json(), "per_image": self.inversion},
            "higher_is_better": {m: METRIC_INFO[m].higher_is_better for m in self.metrics},
            "dataset_level": [m for m in self.metrics if METRIC_INFO[m].level == "dataset"],
            "dataset_kind": self.dataset_kind, "fid_network": self.fid_network, "dataset_errors": self.dataset_errors,
            "skipped": self.skipped, "failed": self.failed, "inversion_failed": self.inversion_failed,
            "inversion_left_out": self.inversion_left_out, "inversion_random_weights": self.inversion_random_weights,
            "metric_errors": self.metric_errors,
            "per_image": {i: {k: finite(v) for k, v in values.items()} for i, values in self.per_image.items()},
        }


def _format(value: Optional[float]) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def report_markdown(result: EvaluationResult, cfg: EvaluationConfig, grid_name: Optional[str]) -> str:
    """report.md: the values, what was skipped and why, the worst images, every failure, the grid."""
    lines = [f"# Evaluation of `{result.results_dir}`", ""]
    total = result.images + len(result.inversion_failed)
    lines.append(f"{total} images: {len(result.per_image)} evaluated, {len(result.inversion_failed)} failed in the "
                 f"inversion, {len(result.failed)} could not be evaluated. "
                 f"Dataset: {f'`{result.data_dir}`' if result.data_dir else 'none (result folders only)'}.")
    for line in result.inversion_summary.report_lines():
        lines += ["", line]
    lines += ["", "| metric | value | images | median | p95 | better | what |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in result.metrics:
        info = METRIC_INFO[name]
        scope = "one value from all images" if info.level == "dataset" else "mean over images"
        spread = result.distribution.get(name, {})
        lines.append(f"| {name} | {_format(result.means.get(name))} | {result.counts.get(name, 0)} | "
                     f"{_format(spread.get('median'))} | {_format(spread.get('p95'))} | "
                     f"{'higher' if info.higher_is_better else 'lower'} | {info.description} ({scope}) |")
    if result.distribution:
        notes = [f"Median and p95 over the images that have the metric: {PERCENTILE_DEFINITION}."]
        for name, spread in result.distribution.items():
            info = METRIC_INFO[name]
            if info.within is not None and within_key(info) in spread:
                notes.append(f"{name}: {spread[within_key(info)]:.1%} of {result.counts[name]} images at most "
                             f"{info.within:g} {info.unit}.")
        lines += ["", " ".join(notes)]
    if result.fid_network:
        lines += ["", f"FIDs computed with the `{result.fid_network}` Inception. The original code computes its FIDs "
                  "with torchvision's ImageNet Inception: ours are comparable with its numbers only when "
                  "evaluation.fid.network is torchvision."]
    if result.inversion_left_out or result.inversion_random_weights:
        lines += ["", "The inversion's loss was not the paper's full loss (from its summary.json):"]
        lines += [f"- {term}: left out; {why}" for term, why in result.inversion_left_out.items()]
        lines += [f"- {term}: random weights; {why}" for term, why in result.inversion_random_weights.items()]
    if result.skipped:
        lines += ["", "Skipped:"] + [f"- {name}: {why}" for name, why in result.skipped.items()]
    if result.dataset_errors:
        lines += ["", "No value:"] + [f"- {name}: {why}" for name, why in result.dataset_errors.items()]

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
