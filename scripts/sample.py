"""Sample meshes from a pretrained generator: OBJ + MTL + PNG per sample and a grid of views.

    python scripts/sample.py --config configs/synthetic.yaml [--checkpoint PATH] [--out DIR] [--set sample.count=16]

The checkpoint is ours (scripts/pretrain.py: generator_ema.pt or checkpoint-latest.pt) or a released
MeshInversion / ConvMesh one; a bare file name is looked up in the pretrained folders.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from meshinv.config import ExperimentConfig
from meshinv.geometry.template import build_template
from meshinv.models import load_generator, truncated_normal
from meshinv.render import make_renderer
from meshinv.render.views import render_turntable
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
    generator = load_generator(s.checkpoint, device, template=cfg.template, model=cfg.model)
    template = build_template(cfg.template).to(device)
    seed = torch.Generator().manual_seed(s.seed)
    sigma = s.truncation_sigma if s.truncation_sigma is not None else cfg.model.truncation_sigma
    z = truncated_normal((s.count, generator.latent_dim), sigma, seed).to(device)
    classes = None
    if generator.n_classes:
        wanted = s.classes or list(range(generator.n_classes))
        classes = torch.tensor([wanted[i % len(wanted)] for i in range(s.count)], device=device)
    with torch.no_grad():
        textures, maps = generator(z, classes)
        vertices = template.vertex_positions(maps)
    renderer = make_renderer(s.render_settings)
    views, files = [], []
    for i in range(s.count):
        with torch.no_grad():
            images, _ = render_turntable(template, renderer, vertices[i], textures[i], s.azimuths)
        views.append(images)
        files.append(str(template.export(out / f"sample_{i:03d}" / "mesh.obj", vertices[i], textures[i])[0]))
    save_grid(out / "samples.png", torch.cat(views), nrow=len(s.azimuths) * max(1, 8 // len(s.azimuths)))
    save_json(out / "summary.json", {"checkpoint": str(s.checkpoint), "count": s.count, "meshes": files,
                                     "classes": None if classes is None else classes.tolist(),
                                     "truncation_sigma": sigma})
    log.info("wrote %d meshes and %s", s.count, out / "samples.png")


if __name__ == "__main__":
    main()
