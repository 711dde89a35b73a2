"""Generate the procedural bird category (images, masks, annotations, 3D ground truth).

    python scripts/make_synthetic.py --config configs/synthetic.yaml [--out DIR] [--set synthetic.splits.train=500]

Writes <out>/<split>/ in the folder format of meshinv.data.folder plus gt/ (see meshinv.data.synthetic)
and <out>/contact_sheet.png. Samples already written are kept, so an interrupted run resumes.
"""

from __future__ import annotations

import logging
from pathlib import Path

from meshinv.config import ExperimentConfig
from meshinv.datagen.synthetic import SyntheticGenerator, contact_sheet, contact_sheet_split, write_splits
from meshinv.utils.config import parse_cli, save_config
from meshinv.utils.images import save_grid
from meshinv.utils.io import save_json
from meshinv.utils.logging import setup_logging

log = logging.getLogger("make_synthetic")


def main() -> None:
    cfg, args = parse_cli(ExperimentConfig, __doc__.splitlines()[1], shortcuts={"--out": "synthetic.out_dir"})
    synthetic = cfg.synthetic
    out = Path(synthetic.out_dir)
    setup_logging(args.log_level, out / "log.txt")
    save_config(cfg, out / "config.yaml")
    generator = SyntheticGenerator(synthetic)
    summary = write_splits(synthetic, generator)
    if synthetic.contact_sheet_rows > 0:
        tiles = contact_sheet(generator, contact_sheet_split(synthetic), synthetic.contact_sheet_rows)
        save_grid(out / "contact_sheet.png", tiles, nrow=tiles.shape[0] // synthetic.contact_sheet_rows)
    save_json(out / "summary.json", summary)
    log.info("wrote %s (%s)", out,
             ", ".join(f"{k}: {v['images']} in {v['seconds']} s" for k, v in summary["splits"].items()))


if __name__ == "__main__":
    main()
