"""Check a dataset folder: which files are present, missing or malformed, and a picture of a few samples.

    python scripts/check_dataset.py --dataset cub|p3d|synthetic|folder --root DIR [--split test] [--out report.png]
                                    [--set samples=8] [--set image_size=256] [--set use_predicted_mask=true]

Prints the report (counts per split; every problem flagged [!!], with the missing image files
and the file and line of a malformed value named) and exits with status 1 if a required file is
missing or malformed or a drawn sample fails to load. The header says OK only when nothing is
flagged; problems in optional files alone make it "usable, but ... PROBLEMS" with status 0. The picture shows each sample with its mask outline
(yellow), annotated keypoints (green) and the camera's projection of the SfM mean shape or the
ground-truth vertices (red).
"""

from __future__ import annotations

import sys

import torch

from meshinv.data.datasets import open_dataset
from meshinv.data.inspect import CheckDatasetConfig, inspect_dataset, sample_overlays
from meshinv.data.preprocess import CropConfig
from meshinv.data.sample import DataError
from meshinv.utils.config import parse_cli
from meshinv.utils.images import save_grid
from meshinv.utils.logging import setup_logging


def main() -> int:
    cfg, args = parse_cli(CheckDatasetConfig, __doc__.splitlines()[0], shortcuts={
        "--dataset": "dataset", "--root": "root", "--split": "split", "--out": "out"})
    setup_logging(args.log_level)
    report = inspect_dataset(cfg.dataset, cfg.root, cfg.split)
    print(report.text())
    options = {"use_predicted_mask": True} if cfg.use_predicted_mask else {}
    try:
        dataset = open_dataset(cfg.root, CropConfig(img_size=cfg.image_size), cfg.split, kind=cfg.dataset, **options)
    except DataError as e:
        print(f"cannot open the {cfg.split or 'default'} split: {e}")
        return 1
    tiles, failures = sample_overlays(dataset, cfg.samples)
    for image_id, error in failures.items():
        print(f"sample {image_id}: {error}")
    if cfg.out and tiles:
        save_grid(cfg.out, torch.stack(tiles), nrow=min(len(tiles), 4))
        print(f"{len(tiles)} samples drawn to {cfg.out}")
    return 0 if report.ok and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
