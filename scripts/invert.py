"""Reconstruct textured meshes from images by inverting a pretrained prior.

    python scripts/invert.py --config configs/synthetic.yaml [--data DIR] [--out DIR] [--checkpoint PATH]
                             [--set inversion.limit=10 ...]
    python scripts/invert.py --config configs/cub.yaml --images my_photos/ --out out/

DIR is any dataset the data layer reads: the synthetic split, a folder of images (+ masks,
+ annotations.json), CUB-200-2011 or PASCAL3D+ in the CMR layout. --images takes a folder of raw
photos: masks come from the segmenter (cached in OUT/masks), cameras from the camera predictor
(inversion.camera_init.predictor), classes from the z search. Outputs go to OUT/<image id>/ (see
meshinv/inversion/results.py) and OUT/summary.json. Re-running the same command skips the images
already done.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from meshinv.config import ExperimentConfig
from meshinv.data.datasets import open_dataset
from meshinv.data.folder import FolderDataset
from meshinv.data.sample import DataError
from meshinv.data.segment import segment_missing
from meshinv.geometry.template import build_template
from meshinv.inversion import Inverter, InversionRun
from meshinv.inversion.results import RUN_CONFIG_FILE, changed_result_settings, finished_ids, saved_run_config
from meshinv.models import load_generator
from meshinv.models.camera import load_camera_predictor
from meshinv.utils.config import parse_cli, save_config, to_dict
from meshinv.utils.device import resolve_device
from meshinv.utils.logging import setup_logging
from meshinv.utils.weights import MissingWeightsError

log = logging.getLogger("invert")


def open_images(cfg: ExperimentConfig, out: Path, device):
    """The dataset to invert; with automatic masks, images without one are segmented first."""
    inv = cfg.inversion
    if not (inv.images or inv.auto_masks):
        return open_dataset(inv.data, inv.crop, split=inv.split, **inv.data_options)
    mask_cache = out / "masks"
    dataset = FolderDataset(inv.images or inv.data, inv.crop, mask_dirs=[mask_cache])
    segment_missing(dataset, mask_cache, cfg.segment, device)
    return dataset


def settings_changed_since_last_run(cfg: ExperimentConfig, out: Path) -> list[str]:
    """Result-changing settings that differ from those of the finished images already in `out`."""
    previous = saved_run_config(out)
    if previous is None or not finished_ids(out):
        return []
    return changed_result_settings(previous, to_dict(cfg))


def main() -> int:
    cfg, args = parse_cli(ExperimentConfig, __doc__.splitlines()[1],
                          shortcuts={"--data": "inversion.data", "--images": "inversion.images",
                                     "--out": "inversion.out_dir", "--checkpoint": "inversion.checkpoint"})
    inv = cfg.inversion
    out = Path(inv.out_dir)
    setup_logging(args.log_level, out / "log.txt")
    changed = settings_changed_since_last_run(cfg, out)
    if changed:
        log.error("%s already holds results made with other settings (%s, against %s): re-running would skip "
                  "them and mix the two. Use a new --out, or delete the folder to redo it.", out,
                  ", ".join(changed), out / RUN_CONFIG_FILE)
        return 1
    save_config(cfg, out / RUN_CONFIG_FILE)
    device = resolve_device(cfg.device)
    try:
        dataset = open_images(cfg, out, device)
        camera_predictor = (load_camera_predictor(inv.camera_init.predictor, device).eval()
                            if inv.camera_init.predictor else None)
    except (DataError, MissingWeightsError, FileNotFoundError) as err:
        log.error("%s", err)
        return 1
    generator = load_generator(inv.checkpoint, device)
    template = build_template(cfg.template)
    inverter = Inverter(generator, template, inv, device)
    summary = InversionRun(inverter, dataset, out, camera_predictor=camera_predictor,
                           checkpoint=str(inv.checkpoint)).run()
    print(f"{summary['done']} images reconstructed, {summary['failed']} failed; meshes and renders in {out}/<image id>/, "
          f"summary in {out / 'summary.json'}")
    return 0 if summary["done"] or not summary["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
