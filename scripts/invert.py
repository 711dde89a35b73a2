"""Reconstruct textured meshes from images by inverting a pretrained prior.

    python scripts/invert.py --config configs/synthetic.yaml [--data DIR] [--out DIR] [--checkpoint PATH]
                             [--set inversion.limit=10 ...]
    python scripts/invert.py --config configs/cub.yaml --images my_photos/ --out out/
    torchrun --nproc_per_node=N scripts/invert.py --config ...   (N processes share the images; one GPU each)

DIR is any dataset the data layer reads: the synthetic split, a folder of images (+ masks,
+ annotations.json), CUB-200-2011 or PASCAL3D+ in the CMR layout. --images takes a folder of raw
photos: masks come from the segmenter (cached in OUT/masks), cameras from the camera predictor
(inversion.camera_init.predictor), classes from the z search. Outputs go to OUT/<image id>/ (see
meshinv/inversion/results.py) and OUT/summary.json. Re-running the same command skips the images
already done; OUT is locked while a run writes into it (meshinv/inversion/output.py). Under
torchrun, every rank inverts its share of the images into OUT (meshinv/inversion/run.py, run_job).
"""

from __future__ import annotations

import logging
import sys

from meshinv.config import ExperimentConfig
from meshinv.inversion.output import log_file
from meshinv.inversion.run import JOB_ERRORS, run_job
from meshinv.utils.config import parse_cli
from meshinv.utils.distributed import launched_rank
from meshinv.utils.logging import setup_logging

log = logging.getLogger("invert")


def main() -> int:
    cfg, args = parse_cli(ExperimentConfig, __doc__.splitlines()[1],
                          shortcuts={"--data": "inversion.data", "--images": "inversion.images",
                                     "--out": "inversion.out_dir", "--checkpoint": "inversion.checkpoint"})
    setup_logging(args.log_level)
    try:
        # (each process of a torchrun job logs into a file of its own in OUT)
        summary = run_job(cfg, on_locked=lambda out: setup_logging(args.log_level,
                                                                   out / log_file(launched_rank())))
    except JOB_ERRORS as err:
        log.error("%s", err)
        return 1
    out = cfg.inversion.out_dir
    if launched_rank() == 0:  # every rank returns the whole job's summary; one reports it
        print(f"{summary['done']} images reconstructed, {summary['failed']} failed; meshes and renders in "
              f"{out}/<image id>/, summary in {out}/summary.json")
    return 0 if summary["done"] or not summary["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
