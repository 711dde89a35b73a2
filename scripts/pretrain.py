"""Pretrain the mesh GAN on pseudo-GT UV maps.

    python scripts/pretrain.py --config configs/synthetic.yaml [--set pretrain.max_steps=100 ...] [--resume | --force]
    torchrun --nproc_per_node=N scripts/pretrain.py --config ...      (data parallel; gloo on CPU)

Writes into pretrain.out_dir: checkpoint-latest.pt (every pretrain.checkpoint_every iterations),
generator_ema.pt (the averaged generator that inversion loads), samples/*.png, tensorboard/,
summary.json, config.yaml and log.txt. A folder that already holds a run is refused unless
--resume (continue it, with the same settings) or --force (start over).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from meshinv.config import ExperimentConfig
from meshinv.models.checkpoints import CheckpointError
from meshinv.training import RunFolderError, prepare_run_folder, pretrain
from meshinv.training.distributed import launched_rank
from meshinv.utils.config import parse_cli, to_dict
from meshinv.utils.device import resolve_device
from meshinv.utils.logging import setup_logging

log = logging.getLogger("pretrain")

# The config sections a pretraining run depends on (a resumed run must not change them).
SECTIONS = ("model", "pretrain", "template")


def main() -> int:
    cfg, args = parse_cli(ExperimentConfig, __doc__.splitlines()[1],
                          flags={"--resume": "continue from <out_dir>/checkpoint-latest.pt if it exists",
                                 "--force": "start over in an out_dir that holds a run (deletes its latest checkpoint)"})
    out = Path(cfg.pretrain.out_dir)
    main_process = launched_rank() == 0
    setup_logging(args.log_level, out / "log.txt" if main_process else None)
    try:
        prepare_run_folder(out, cfg, SECTIONS, resume=args.resume, force=args.force, write=main_process)
        summary = pretrain(cfg.model, cfg.pretrain, cfg.template, resolve_device(cfg.device), resume=args.resume,
                           experiment={"name": cfg.name, "template": to_dict(cfg.template)})
    except (RunFolderError, CheckpointError) as err:  # the folder's run, or a damaged checkpoint-latest.pt
        log.error("%s", err)
        return 1
    if main_process:
        log.info("done: %s", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
