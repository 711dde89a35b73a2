"""Render a textured mesh as a turntable and export it as OBJ + MTL + PNG.

    python scripts/render_mesh.py --config configs/render_demo.yaml [--set key=value ...]

Without `mesh.obj_path` the template is deformed by a smooth random symmetric map (the kind of
deformation map the generator predicts) and textured with a checkerboard, which shows the whole
geometry + camera + renderer path end to end. With `mesh.obj_path` (and optionally
`mesh.texture_path`) any OBJ with texture coordinates is rendered instead.
"""

from __future__ import annotations

from pathlib import Path

from meshinv.render.demo import RenderMeshConfig, render_demo
from meshinv.utils.config import parse_cli, save_config
from meshinv.utils.device import resolve_device
from meshinv.utils.logging import setup_logging

__all__ = ["RenderMeshConfig"]  # read by tests/test_scripts.py as this script's config class


def main() -> None:
    cfg, args = parse_cli(RenderMeshConfig, __doc__.splitlines()[1])
    out = Path(cfg.out_dir)
    setup_logging(args.log_level, out / "log.txt")
    save_config(cfg, out / "config.yaml")
    render_demo(cfg, resolve_device(cfg.device))


if __name__ == "__main__":
    main()
