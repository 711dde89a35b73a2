"""Evaluate an inversion results folder: per-image metrics, their means, dataset-level FIDs, and a visual report.

    python scripts/evaluate.py --config configs/synthetic.yaml --results DIR [--data DIR] [--set evaluation.limit=20]
    python scripts/evaluate.py --config configs/cub.yaml --results outputs/inversion_cub     (mask_iou + FIDs)

Writes into the results folder: metrics.json (per image, means, medians and 95th percentiles, counts,
skipped metrics, the results' starting-camera sources and seconds per image, the images the
inversion failed on (from its summary.json) and those that could not be evaluated, with their
reasons), report.md (the values, where the starting cameras came from, the worst images by mask IoU,
the grid) and report_grid.png (input, reconstruction, novel views of the prediction and, on
synthetic data, of the ground truth), plus evaluate_config.yaml and evaluate_log.txt. Metrics:
evaluation.metrics, from meshinv.evaluation.metrics; those needing ground truth run only with a
synthetic --data split, rotation_error_deg with a dataset that has cameras, iou_3d only with
PASCAL3D+. fid_1 / fid_10 / fid_12
need the Inception weights (pretrained/README.md); without them they are skipped with the reason.
"""

from __future__ import annotations

import logging
from pathlib import Path

from meshinv.config import ExperimentConfig
from meshinv.data.sample import DataError
from meshinv.evaluation.evaluate import run_evaluation
from meshinv.evaluation.report import write_outputs
from meshinv.geometry.template import build_template
from meshinv.utils.config import parse_cli, save_config
from meshinv.utils.device import resolve_device
from meshinv.utils.logging import setup_logging

log = logging.getLogger("evaluate")


def main() -> None:
    cfg, args = parse_cli(ExperimentConfig, __doc__.splitlines()[0],
                          shortcuts={"--results": "evaluation.results_dir", "--data": "evaluation.data_dir"})
    e = cfg.evaluation
    out = Path(e.results_dir)
    if not out.is_dir():
        raise SystemExit(f"evaluate: results folder not found: {out}")
    # Own file names: the inversion's config.yaml and log.txt live in the same folder.
    setup_logging(args.log_level, out / "evaluate_log.txt")
    save_config(cfg, out / "evaluate_config.yaml")
    device = resolve_device(cfg.device)
    template = build_template(cfg.template)
    try:
        result = run_evaluation(out, e.data_dir, template=template, cfg=e, device=device)
    except (DataError, FileNotFoundError, ValueError) as error:
        raise SystemExit(f"evaluate: {error}") from None
    paths = write_outputs(result, out, e)
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    if not result.per_image:
        raise SystemExit("evaluate: no image could be evaluated (reasons in metrics.json)")


if __name__ == "__main__":
    main()
