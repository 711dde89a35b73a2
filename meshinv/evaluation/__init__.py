"""Evaluation of inversion results (SPEC section 8).

    metrics   the metric registry (register_metric, get_metric, METRICS) and the metrics themselves
    config    EvaluationConfig, the `evaluation` section of an experiment config
    evaluate  run_evaluation / evaluate_results over a results folder, and the report files

Only `config` and `metrics` are imported here, so that the registry stays cheap to import (training
code uses it); import meshinv.evaluation.evaluate for the folder-level functions.
"""

from .config import EvaluationConfig
from .metrics import (
    METRIC_INFO, METRICS, EvaluationContext, MetricInfo, MissingInputError, get_metric, iou, register_metric,
    turntable_silhouettes, weak_perspective_chamfer,
)

__all__ = [
    "EvaluationConfig", "METRIC_INFO", "METRICS", "EvaluationContext", "MetricInfo", "MissingInputError",
    "get_metric", "iou", "register_metric", "turntable_silhouettes", "weak_perspective_chamfer",
]
