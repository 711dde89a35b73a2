"""What each result says about its inversion (meshinv/inversion/results.py): where its starting
camera came from (InversionRecord.camera_source: predictor, predictions, dataset, dataset+noise, or
any other name a newer inversion writes), that camera's score where the record has one, and the
seconds the image took; and their summary for metrics.json and report.md.

A start whose source begins with "dataset" used the dataset's own camera, which on synthetic data
is the ground truth: a figure made from such results rests on information a photo does not carry,
and the report says so.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

UNRECORDED = "unrecorded"        # results written before the record had camera_source
DATASET_CAMERA_PREFIX = "dataset"


def _finite(value: Any) -> Optional[float]:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def record_facts(record) -> dict:
    """{"camera_source": str, "seconds": float or None[, "camera_init_score": float]} of one
    InversionRecord; a missing, NaN or infinite time or score counts as absent."""
    facts = {"camera_source": str(record.camera_source or UNRECORDED), "seconds": _finite(record.seconds)}
    score = _finite(getattr(record, "camera_init_score", None))  # only newer records have it
    if score is not None:
        facts["camera_init_score"] = score
    return facts


def starts_from_dataset_camera(source: str) -> bool:
    return source.startswith(DATASET_CAMERA_PREFIX)


@dataclass
class InversionSummary:
    """The results' starting cameras and times, summed up."""

    camera_sources: dict[str, int]       # source -> results, the most frequent first
    from_dataset_camera: int             # results that started from the dataset's camera
    seconds_per_image: Optional[float]   # mean over the results with a recorded time
    timed_images: int

    @classmethod
    def of(cls, facts: dict[str, dict]) -> "InversionSummary":
        """The summary of record_facts' values (image id -> facts)."""
        counts = Counter(f["camera_source"] for f in facts.values())
        sources = dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
        seconds = [f["seconds"] for f in facts.values() if f.get("seconds") is not None]
        return cls(sources, sum(n for s, n in sources.items() if starts_from_dataset_camera(s)),
                   float(np.mean(seconds)) if seconds else None, len(seconds))

    def to_json(self) -> dict:
        return {"camera_sources": self.camera_sources, "from_dataset_camera": self.from_dataset_camera,
                "seconds_per_image": self.seconds_per_image, "timed_images": self.timed_images}

    def report_lines(self) -> list[str]:
        """report.md's lines: the starting cameras, a warning when some came from the dataset, the time."""
        total = sum(self.camera_sources.values())
        if not total:
            return []
        lines = ["Starting cameras: " + ", ".join(f"{s} {n}" for s, n in self.camera_sources.items()) + "."]
        if self.from_dataset_camera:
            lines.append(f"**Warning**: {self.from_dataset_camera} of {total} results started from the dataset's "
                         "camera (ground truth on synthetic data), not from the image alone.")
        if self.seconds_per_image is not None:
            lines.append(f"Inversion time: {self.seconds_per_image:.2f} s per image (mean over the "
                         f"{self.timed_images} results that record it).")
        else:
            lines.append("Inversion time: not recorded.")
        return lines
