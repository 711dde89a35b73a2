"""Reconstruct textured meshes from images by inverting a pretrained prior.

    python scripts/invert.py --config configs/synthetic.yaml [--data DIR] [--out DIR] [--checkpoint PATH]
                             [--set inversion.limit=10 ...]

DIR is any dataset the data layer reads: the synthetic split, a folder of images (+ masks,
+ annotations.json), CUB-200-2011 or PASCAL3D+ in the CMR layout. Outputs go to OUT/<image id>/
(see meshinv/inversion/results.py) and OUT/summary.json. Re-running the same command skips the
images already done.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from meshinv.config import ExperimentConfig
from meshinv.data.datasets import open_dataset
from meshinv.data.sample import DataError
from meshinv.geometry.template import build_template
from meshinv.inversion import Inverter, InversionRun
from meshinv.models import load_generator
from meshinv.utils.config import parse_cli, save_config
from meshinv.utils.device import resolve_device
from meshinv.utils.logging import setup_logging

log = logging.getLogger("invert")


def main() -> int:
    cfg, args = parse_cli(ExperimentConfig, __doc__.splitlines()[1],
                          shortcuts={"--data": "inversion.data", "--out": "inversion.out_dir",
                                     "--checkpoint": "inversion.checkpoint"})
    inv = cfg.inversion
    out = Path(inv.out_dir)
    setup_logging(args.log_level, out / "log.txt")
    save_config(cfg, out / "config.yaml")
    device = resolve_device(cfg.device)
    try:
        dataset = open_dataset(inv.data, inv.crop)
    except DataError as err:
        log.error("%s", err)
        return 1
    generator = load_generator(inv.checkpoint, device)
    template = build_template(cfg.template)
    inverter = Inverter(generator, template, inv, device)
    summary = InversionRun(inverter, dataset, out, checkpoint=str(inv.checkpoint)).run()
    print(f"{summary['done']} images reconstructed, {summary['failed']} failed; meshes and renders in {out}/<image id>/, "
          f"summary in {out / 'summary.json'}")
    return 0 if summary["done"] or not summary["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
