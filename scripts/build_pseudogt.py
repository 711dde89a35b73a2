"""Build pseudo-ground-truth UV maps for pretraining (or convert ConvMesh's released ones).

    python scripts/build_pseudogt.py --config configs/synthetic.yaml [--split train]
    python scripts/build_pseudogt.py --convert-convmesh DIR/pseudogt_512x512 --poses DIR/cache/poses_metadata.npz --out OUT --trust-pickled-files

For the synthetic category the mesh and camera are the ground truth. Writes
<dataset>/<split>/pseudogt_<T>x<T>/<image id>.npz and a report.json beside them. ConvMesh's files
are pickles, which run whatever code they hold when loaded: the conversion needs
--trust-pickled-files, saying that they come from a source you trust.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from meshinv.config import ExperimentConfig
from meshinv.data.sample import DataError
from meshinv.datagen.pseudogt import build_synthetic_pseudogt, convert_convmesh_pseudogt, synthetic_pseudogt_folder
from meshinv.utils.config import parse_cli
from meshinv.utils.io import save_json
from meshinv.utils.logging import setup_logging

log = logging.getLogger("build_pseudogt")


def main() -> int:
    cfg, args = parse_cli(ExperimentConfig, __doc__.splitlines()[1], shortcuts={
        "--split": "pseudogt.split", "--convert-convmesh": "pseudogt.convert_convmesh",
        "--poses": "pseudogt.convmesh_poses", "--out": "pseudogt.convert_out"},
        flags={"--trust-pickled-files": "with --convert-convmesh: the files come from a source you trust (they are "
                                        "pickles, which run whatever code they hold when loaded)"})
    pgt = cfg.pseudogt
    if pgt.convert_convmesh:
        setup_logging(args.log_level, Path(pgt.convert_out) / "log.txt" if args.trust_pickled_files else None)
        try:
            count = convert_convmesh_pseudogt(pgt.convert_convmesh, pgt.convert_out, pgt.convmesh_poses,
                                              trust_pickled_files=args.trust_pickled_files)
        except DataError as err:
            log.error("%s", err)
            return 1
        log.info("converted %d files into %s", count, pgt.convert_out)
        return 0
    out = synthetic_pseudogt_folder(cfg.synthetic, pgt)
    setup_logging(args.log_level, out / "log.txt")
    try:
        report = build_synthetic_pseudogt(cfg.synthetic, pgt)
    except DataError as err:  # no such split, or not a synthetic one
        log.error("%s", err)
        return 1
    save_json(out / "report.json", report)
    if report["failed"]:
        log.warning("%d images failed; see %s", len(report["failed"]), out / "report.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
