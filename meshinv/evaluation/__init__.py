"""Evaluation of inversion results (docs/method.md section 8).

    metrics   the metric registry (register_metric, register_dataset_metric, get_metric, METRICS)
              and the metrics themselves
    config    EvaluationConfig (with FIDConfig), the `evaluation` section of an experiment config
    evaluate  run_evaluation / evaluate_results: the per-image metric loop over a results folder
      results_folder  reading the folder: image folders, the inversion's failures, one record + images
      crops           the crop each result was made with
      samples         dataset samples by image id at that crop; what the dataset can give
      distribution    median, 95th percentile, fraction within a threshold of a per-image metric
      inversion_facts each result's starting camera source and time, and their summary
      grid, report    report_grid.png's rows; EvaluationResult, metrics.json, report.md (write_outputs)
    fid       FID_1 / FID_10 / FID_12: Inception, statistics, reference statistics, images, metrics
    voxels    mesh voxelisation and the PASCAL3D+ 3D IoU

Only `config` and `metrics` are imported here, so that the registry stays cheap to import (training
code uses it); import meshinv.evaluation.evaluate, .report, .fid or .voxels for the rest.
"""

from .config import EvaluationConfig, FIDConfig
from .metrics import (
    METRIC_INFO, METRICS, DatasetMetric, DatasetMetricEnv, EvaluationContext, MetricInfo, MissingInputError,
    get_metric, iou, register_dataset_metric, register_metric, weak_perspective_chamfer,
)

__all__ = [
    "EvaluationConfig", "FIDConfig", "METRIC_INFO", "METRICS", "DatasetMetric", "DatasetMetricEnv",
    "EvaluationContext", "MetricInfo", "MissingInputError", "get_metric", "iou", "register_dataset_metric",
    "register_metric", "weak_perspective_chamfer",
]
