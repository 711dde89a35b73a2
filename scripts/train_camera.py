"""Train the CMR-style camera predictor on a dataset's cameras.

    python scripts/train_camera.py --config configs/synthetic.yaml [--set camera.max_steps=100 ...] [--resume | --force]

Reads <camera.data>/<camera.train_split> (cropped once into memory at camera.image_size) and writes
into camera.out_dir: checkpoint-latest.pt (every camera.checkpoint_every steps; --resume continues
from it), camera_predictor.pt (for scripts/predict_cameras.py), tensorboard/, summary.json (median
rotation / translation / scale errors on camera.eval_split), config.yaml and log.txt. A folder that
already holds a run is refused unless --resume (continue it, with the same settings) or --force
(start over).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from meshinv.config import ExperimentConfig
from meshinv.models.checkpoints import CheckpointError
from meshinv.training.camera import train_camera
from meshinv.training.runs import RunFolderError, prepare_run_folder
from meshinv.utils.config import parse_cli, to_dict
from meshinv.utils.device import resolve_device
from meshinv.utils.logging import setup_logging

log = logging.getLogger("train_camera")

# The config sections a camera training run depends on (a resumed run must not change them).
SECTIONS = ("camera", "template")


def main() -> int:
    cfg, args = parse_cli(ExperimentConfig, __doc__.splitlines()[1], shortcuts={"--out": "camera.out_dir"},
                          flags={"--resume": "continue from <out_dir>/checkpoint-latest.pt if it exists",
                                 "--force": "start over in an out_dir that holds a run (deletes its latest checkpoint)"})
    out = Path(cfg.camera.out_dir)
    setup_logging(args.log_level, out / "log.txt")
    try:
        prepare_run_folder(out, cfg, SECTIONS, resume=args.resume, force=args.force)
        summary = train_camera(cfg.camera, cfg.template, resolve_device(cfg.device), resume=args.resume,
                               experiment={"name": cfg.name, "template": to_dict(cfg.template)})
    except (RunFolderError, CheckpointError) as err:  # the folder's run, or a damaged checkpoint-latest.pt
        log.error("%s", err)
        return 1
    log.info("done: %s", summary["evaluation"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
