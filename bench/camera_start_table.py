"""The table of bench/camera_start.sh's runs: python bench/camera_start_table.py OUT_DIR (markdown on stdout)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = [("mask IoU", "mask_iou", "mean"), ("full-mask IoU", "full_mask_iou", "mean"),
           ("novel-view IoU", "novel_view_iou", "mean"), ("3D Chamfer", "chamfer_3d", "mean"),
           ("rotation error median (deg)", "rotation_error_deg", "median"),
           ("p95 (deg)", "rotation_error_deg", "p95"), ("within 30 deg", "rotation_error_deg", "within_30deg")]


def row(name: str, metrics: dict) -> str:
    cells = []
    for _, metric, stat in COLUMNS:
        value = metrics["means"].get(metric) if stat == "mean" else metrics["distribution"].get(metric, {}).get(stat)
        cells.append("-" if value is None else f"{value:.3f}" if stat != "within_30deg" else f"{100 * value:.0f}%")
    inversion = metrics.get("inversion", {})
    seconds = inversion.get("seconds_per_image")
    sources = ", ".join(f"{k} {v}" for k, v in sorted(inversion.get("camera_sources", {}).items()))
    images = metrics["counts"].get("per_metric", {}).get("mask_iou", "?")
    return (f"| {name} | {images} | " + " | ".join(cells) + f" | {'-' if seconds is None else f'{seconds:.2f}'} | "
            f"{sources} |")


def main() -> None:
    folder = Path(sys.argv[1])
    print("| run | images | " + " | ".join(c[0] for c in COLUMNS) + " | s/image | starting cameras |")
    print("|" + "---|" * (len(COLUMNS) + 4))
    for path in sorted(folder.glob("*.json")):
        print(row(path.stem, json.loads(path.read_text())))


if __name__ == "__main__":
    main()
