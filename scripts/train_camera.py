"""Train the CMR-style camera predictor on a dataset's cameras.

    python scripts/train_camera.py --config configs/synthetic.yaml [--set camera.max_steps=100 ...] [--resume]

Reads <camera.data>/<camera.train_split> (cropped once into memory at camera.image_size) and writes
into camera.out_dir: checkpoint-latest.pt (every camera.checkpoint_every steps; --resume continues
from it), camera_predictor.pt (for scripts/predict_cameras.py), tensorboard/, summary.json (median
rotation / translation / scale errors on camera.eval_split), config.yaml and log.txt.
"""

from __future__ import annotations

import logging
from pathlib import Path

from meshinv.config import ExperimentConfig
from meshinv.training.camera import train_camera
from meshinv.utils.config import parse_cli, save_config, to_dict
from meshinv.utils.device import resolve_device
from meshinv.utils.logging import setup_logging

log = logging.getLogger("train_camera")


def main() -> None:
    cfg, args = parse_cli(ExperimentConfig, __doc__.splitlines()[1], shortcuts={"--out": "camera.out_dir"},
                          flags={"--resume": "continue from <out_dir>/checkpoint-latest.pt if it exists"})
    out = Path(cfg.camera.out_dir)
    setup_logging(args.log_level, out / "log.txt")
    save_config(cfg, out / "config.yaml")
    summary = train_camera(cfg.camera, cfg.template, resolve_device(cfg.device), resume=args.resume,
                           experiment={"name": cfg.name, "template": to_dict(cfg.template)})
    log.info("done: %s", summary["evaluation"])


if __name__ == "__main__":
    main()
