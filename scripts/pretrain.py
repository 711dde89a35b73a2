"""Pretrain the mesh GAN on pseudo-GT UV maps.

    python scripts/pretrain.py --config configs/synthetic.yaml [--set pretrain.max_steps=100 ...] [--resume]
    torchrun --nproc_per_node=N scripts/pretrain.py --config ...      (data parallel; gloo on CPU)

Writes into pretrain.out_dir: checkpoint-latest.pt (every pretrain.checkpoint_every iterations),
generator_ema.pt (the averaged generator that inversion loads), samples/*.png, tensorboard/,
summary.json, config.yaml and log.txt.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from meshinv.config import ExperimentConfig
from meshinv.training import pretrain
from meshinv.utils.config import parse_cli, save_config, to_dict
from meshinv.utils.device import resolve_device
from meshinv.utils.logging import setup_logging

log = logging.getLogger("pretrain")


def main() -> None:
    cfg, args = parse_cli(ExperimentConfig, __doc__.splitlines()[1],
                          flags={"--resume": "continue from <out_dir>/checkpoint-latest.pt if it exists"})
    out = Path(cfg.pretrain.out_dir)
    main_process = int(os.environ.get("RANK", "0")) == 0
    setup_logging(args.log_level, out / "log.txt" if main_process else None)
    if main_process:
        save_config(cfg, out / "config.yaml")
    summary = pretrain(cfg.model, cfg.pretrain, cfg.template, resolve_device(cfg.device), resume=args.resume,
                       experiment={"name": cfg.name, "template": to_dict(cfg.template)})
    if main_process:
        log.info("done: %s", summary)


if __name__ == "__main__":
    main()
