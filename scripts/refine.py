"""Refine the results of a finished inversion run without inverting again (meshinv/inversion/refine.py).

    python scripts/refine.py --run RUN --out OUT [--set inversion.refine.texture=true] [--set inversion.refine.shape=true]
                             [--set inversion.limit=16 ...]

RUN is a folder scripts/invert.py wrote; its config.yaml is the config (--set may change
inversion.refine.* and the job keys: limit, image_ids, batch_size, export). Each image is read again
as the run read it, refined from its record, and written into OUT as a run folder of its own
(result.pt, the usual images, summary.json, config.yaml), which scripts/evaluate.py reads as it
reads RUN. Re-running the same command skips the images already refined.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from meshinv.config import ExperimentConfig
from meshinv.inversion.output import LOG_FILE, OutputFolderError
from meshinv.inversion.refine_job import refine_run
from meshinv.inversion.results import RUN_CONFIG_FILE
from meshinv.utils.config import ConfigError, parse_cli
from meshinv.utils.logging import setup_logging

log = logging.getLogger("refine")


def main() -> int:
    run = argparse.ArgumentParser(add_help=False)
    run.add_argument("--run", required="-h" not in sys.argv and "--help" not in sys.argv,
                     help="the finished run folder (its config.yaml is the config)")
    known, rest = run.parse_known_args()
    config = ["--config", str(Path(known.run) / RUN_CONFIG_FILE)] if known.run else []
    cfg, args = parse_cli(ExperimentConfig, __doc__.splitlines()[0], config + rest,
                          shortcuts={"--out": "inversion.out_dir"})
    out = Path(cfg.inversion.out_dir)
    setup_logging(args.log_level)
    try:
        out.mkdir(parents=True, exist_ok=True)
        setup_logging(args.log_level, out / LOG_FILE)
        summary = refine_run(cfg, known.run)
    except (ConfigError, OutputFolderError, FileNotFoundError, ValueError) as err:
        log.error("%s", err)
        return 1
    print(f"{summary['done']} images refined, {summary['failed']} failed; results in {out}, summary in "
          f"{out}/summary.json")
    return 0 if summary["done"] or not summary["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
