"""The distribution of a per-image metric over the evaluated images: its median, its 95th
percentile and, for a metric with a threshold of interest (MetricInfo.within, e.g. 30 degrees of
rotation error), the fraction of images whose value is at most that threshold.

Percentiles are torch.quantile's default, linear interpolation (numpy's default too), in float64:
with the n values sorted, x_0 <= ... <= x_{n-1}, the p-quantile lies at position p (n - 1) and is
interpolated linearly between the values either side. So the median of an even count is the mean of
the two middle values, and the 95th percentile of 21 values is x_19 exactly.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .metrics import MetricInfo

QUANTILES = {"median": 0.5, "p95": 0.95}
PERCENTILE_DEFINITION = "torch.quantile, linear interpolation between the sorted per-image values"


def within_key(info: MetricInfo) -> str:
    """The name of the fraction within info.within, e.g. within_30deg."""
    return f"within_{info.within:g}{info.unit}"


def distribution(values: Sequence[float], info: MetricInfo) -> dict[str, float]:
    """{"median", "p95"[, within_key(info)]} of one metric's per-image values; {} for no values."""
    if len(values) == 0:
        return {}
    x = torch.tensor(list(values), dtype=torch.float64)
    stats = {name: float(torch.quantile(x, q)) for name, q in QUANTILES.items()}
    if info.within is not None:
        stats[within_key(info)] = float((x <= info.within).double().mean())
    return stats
