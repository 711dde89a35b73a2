"""Sample meshes from a pretrained generator: OBJ + MTL + PNG per sample and a grid of views.

    python scripts/sample.py --config configs/synthetic.yaml [--checkpoint PATH] [--out DIR] [--set sample.count=16]

The checkpoint is ours (scripts/pretrain.py: generator_ema.pt or checkpoint-latest.pt) or a released
MeshInversion / ConvMesh one; a bare file name is looked up in the pretrained folders.
"""

from __future__ import annotations

import logging
from pathlib import Path

from meshinv.config import ExperimentConfig
from meshinv.geometry.template import build_template
from meshinv.models import load_generator
from meshinv.training.samples import export_samples
from meshinv.utils.config import parse_cli, save_config
from meshinv.utils.device import resolve_device
from meshinv.utils.images import save_grid
from meshinv.utils.io import save_json
from meshinv.utils.logging import setup_logging

log = logging.getLogger("sample")


def main() -> None:
    cfg, args = parse_cli(ExperimentConfig, __doc__.splitlines()[1],
                          shortcuts={"--checkpoint": "sample.checkpoint", "--out": "sample.out_dir"})
    s = cfg.sample
    out = Path(s.out_dir)
    setup_logging(args.log_level, out / "log.txt")
    save_config(cfg, out / "config.yaml")
    device = resolve_device(cfg.device)
    sigma = s.truncation_sigma if s.truncation_sigma is not None else cfg.model.truncation_sigma
    views, summary = export_samples(load_generator(s.checkpoint, device, template=cfg.template, model=cfg.model), build_template(cfg.template).to(device), out,
                                    s.count, sigma, s.seed, s.classes, s.image_size, s.azimuths)
    save_grid(out / "samples.png", views, nrow=len(s.azimuths) * max(1, 8 // len(s.azimuths)))
    save_json(out / "summary.json", {"checkpoint": str(s.checkpoint), **summary})
    log.info("wrote %d meshes and %s", s.count, out / "samples.png")


if __name__ == "__main__":
    main()
