"""The table of bench/loss_ablation.sh's runs: python bench/loss_ablation_table.py OUT_DIR (markdown on stdout).

One row per run (OUT_DIR/<mode>.json, a metrics.json), in the script's order; the appearance and FID
columns show only when a run computed them (they need the Inception weights, pretrained/README.md), and the last
column names the terms of the paper's loss a run left out (e.g. the VGG term without its weights).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ORDER = ["chamfer", "l1", "l1_alone", "contextual", "raster"]  # bench/loss_ablation.sh's modes
COLUMNS = [("mask IoU", "mask_iou", "mean"), ("full-mask IoU", "full_mask_iou", "mean"),
           ("novel-view IoU", "novel_view_iou", "mean"), ("3D Chamfer", "chamfer_3d", "mean"),
           ("rotation error median (deg)", "rotation_error_deg", "median")]
# Appearance against the true textured mesh: what the texture terms are for (FID only approximates it).
APPEARANCE = [("PSNR input view", "psnr_input_view", "mean"), ("PSNR novel views", "psnr_novel_views", "mean"),
              ("SSIM novel views", "ssim_novel_views", "mean"), ("UV error seen", "uv_error_seen", "mean"),
              ("UV error unseen", "uv_error_unseen", "mean")]
FIDS = [("FID_1", "fid_1", "mean"), ("FID_12", "fid_12", "mean")]


def cell(metrics: dict, metric: str, stat: str) -> str:
    value = metrics["means"].get(metric) if stat == "mean" else metrics["distribution"].get(metric, {}).get(stat)
    return "-" if value is None else f"{value:.3f}"


def row(name: str, metrics: dict, columns: list) -> str:
    counts = metrics["counts"]
    images = counts.get("per_metric", counts).get("mask_iou", "?")
    seconds = metrics.get("inversion", {}).get("seconds_per_image")
    left_out = ", ".join(sorted(metrics.get("inversion_left_out") or {})) or "-"
    return (f"| {name} | {images} | " + " | ".join(cell(metrics, m, s) for _, m, s in columns)
            + f" | {'-' if seconds is None else f'{seconds:.2f}'} | {left_out} |")


def main() -> None:
    runs = {path.stem: json.loads(path.read_text()) for path in Path(sys.argv[1]).glob("*.json")}
    names = sorted(runs, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    columns = COLUMNS + [c for c in APPEARANCE + FIDS if any(r["means"].get(c[1]) is not None for r in runs.values())]
    print("| run | images | " + " | ".join(c[0] for c in columns) + " | s/image | left out |")
    print("|" + "---|" * (len(columns) + 4))
    for name in names:
        print(row(name, runs[name], columns))


if __name__ == "__main__":
    main()
