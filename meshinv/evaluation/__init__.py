"""Evaluation of inversion results (docs/method.md section 8).

    metrics   the metric registry (register_metric, register_dataset_metric, get_metric, METRICS)
              and the metrics themselves
    config    EvaluationConfig (with FIDConfig), the `evaluation` section of an experiment config
    evaluate  run_evaluation / evaluate_results over a results folder, and the report files
    fid       Inception features, FID statistics and the FID_1 / FID_10 / FID_12 protocol
    voxels    mesh voxelisation and the PASCAL3D+ 3D IoU

Only `config` and `metrics` are imported here, so that the registry stays cheap to import (training
code uses it); import meshinv.evaluation.evaluate, .fid or .voxels for the rest.
"""

from .config import EvaluationConfig, FIDConfig
from .metrics import (
    METRIC_INFO, METRICS, DatasetMetric, DatasetMetricEnv, EvaluationContext, MetricInfo, MissingInputError,
    get_metric, iou, register_dataset_metric, register_metric, turntable_silhouettes, weak_perspective_chamfer,
)

__all__ = [
    "EvaluationConfig", "FIDConfig", "METRIC_INFO", "METRICS", "DatasetMetric", "DatasetMetricEnv",
    "EvaluationContext", "MetricInfo", "MissingInputError", "get_metric", "iou", "register_dataset_metric",
    "register_metric", "turntable_silhouettes", "weak_perspective_chamfer",
]
