"""Reconstruct textured meshes from images by inverting a pretrained prior.

    python scripts/invert.py --config configs/synthetic.yaml [--data DIR] [--out DIR] [--checkpoint PATH]
                             [--set inversion.limit=10 ...]
    python scripts/invert.py --config configs/cub.yaml --images my_photos/ --out out/

DIR is any dataset the data layer reads: the synthetic split, a folder of images (+ masks,
+ annotations.json), CUB-200-2011 or PASCAL3D+ in the CMR layout. --images takes a folder of raw
photos: masks come from the segmenter (cached in OUT/masks), cameras from the camera predictor
(inversion.camera_init.predictor), classes from the z search. Outputs go to OUT/<image id>/ (see
meshinv/inversion/results.py) and OUT/summary.json. Re-running the same command skips the images
already done; OUT is locked while a run writes into it (meshinv/inversion/output.py).
"""

from __future__ import annotations

import logging
import sys

from meshinv.config import ExperimentConfig
from meshinv.data.sample import DataError
from meshinv.data.segment import segment_missing
from meshinv.geometry.template import build_template
from meshinv.inversion import (
    Inverter, InversionRun, MissingInputsError, OutputFolder, OutputFolderError, check_job_inputs, validate_inversion,
)
from meshinv.inversion.output import LOG_FILE, MASK_CACHE
from meshinv.inversion.results import RUN_CONFIG_FILE
from meshinv.models import CheckpointError, load_generator
from meshinv.models.camera import load_camera_predictor
from meshinv.utils.config import ConfigError, parse_cli, save_config, to_dict
from meshinv.utils.device import resolve_device
from meshinv.utils.logging import setup_logging

log = logging.getLogger("invert")


def main() -> int:
    cfg, args = parse_cli(ExperimentConfig, __doc__.splitlines()[1],
                          shortcuts={"--data": "inversion.data", "--images": "inversion.images",
                                     "--out": "inversion.out_dir", "--checkpoint": "inversion.checkpoint"})
    inv = cfg.inversion
    setup_logging(args.log_level)
    output = OutputFolder(inv.out_dir)
    try:
        validate_inversion(inv)
        output.refuse_dataset(inv.data_root)
        with output.locked():
            setup_logging(args.log_level, output.path / LOG_FILE)  # only the lock holder writes into OUT
            output.remove_stale_temp_files()
            inputs = check_job_inputs(inv, cfg.segment, output)
            if inputs.predictions is not None:  # recorded where it was found, wherever the next run starts
                inv.camera_init.predictions = str(inputs.predictions.resolve())
            device = resolve_device(cfg.device)
            # Before anything is recorded or segmented: a prior made for another template is refused.
            generator = load_generator(inputs.checkpoint, device, template=cfg.template, model=cfg.model)
            output.check_and_record_settings(to_dict(cfg), inputs.checkpoint)
            save_config(cfg, output.path / RUN_CONFIG_FILE)
            if inputs.without_masks:  # without the segmenter's weights, each such photo gets the reason
                segment_missing(inputs.dataset, output.path / MASK_CACHE, cfg.segment, device)
            camera_predictor = (load_camera_predictor(inv.camera_init.predictor, device).eval()
                                if inv.camera_init.predictor else None)
            inverter = Inverter(generator, build_template(cfg.template), inv, device)
            summary = InversionRun(inverter, inputs.dataset, inv, camera_predictor, output).run()
    except (ConfigError, OutputFolderError, MissingInputsError, DataError, CheckpointError) as err:
        log.error("%s", err)
        return 1
    print(f"{summary['done']} images reconstructed, {summary['failed']} failed; meshes and renders in "
          f"{output.path}/<image id>/, summary in {output.path / 'summary.json'}")
    return 0 if summary["done"] or not summary["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
