"""The rendering demo (scripts/render_mesh.py): a textured mesh as a turntable, exported as OBJ + MTL + PNG.

Without `mesh.obj_path` the template is deformed by a smooth random symmetric map (the kind of
deformation map the generator predicts) and textured with a checkerboard, which shows the whole
geometry + camera + renderer path end to end. With `mesh.obj_path` (and optionally
`mesh.texture_path`) any OBJ with texture coordinates is rendered instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from ..geometry import MeshTemplate, TemplateConfig, build_template
from ..geometry.procedural import checker_texture, smooth_symmetric_map
from ..utils.images import read_image_tensor, save_grid
from ..utils.io import save_json
from .settings import make_renderer
from .views import NOVEL_VIEW_SCALE, render_turntable

log = logging.getLogger(__name__)


@dataclass
class MeshSource:
    obj_path: Optional[str] = None      # OBJ with texture coordinates; None = random deformed template
    texture_path: Optional[str] = None  # texture image for obj_path; None = checkerboard
    symmetric: bool = False             # treat obj_path as a mirror-symmetric template (UV remapping)
    deformation_amplitude: float = 0.15  # random deformation map scale (template mode)
    deformation_cells: int = 4           # coarse grid of the random map: smaller = smoother
    texture_size: int = 128


@dataclass
class RenderMeshConfig:
    out_dir: str = "outputs/render_demo"
    seed: int = 0
    device: str = "auto"
    template: TemplateConfig = field(default_factory=TemplateConfig)
    mesh: MeshSource = field(default_factory=MeshSource)
    image_size: int = 256
    azimuths: list[float] = field(default_factory=lambda: [float(a) for a in range(0, 360, 45)])
    scale: float = NOVEL_VIEW_SCALE  # weak-perspective scale of the views (the evaluation's)
    background: float = 1.0    # in [-1, 1]; 1 = white, as the evaluation's renders


def demo_mesh(cfg: RenderMeshConfig, device: torch.device) -> tuple[MeshTemplate, torch.Tensor, torch.Tensor]:
    """(template, vertices (V, 3), texture (1, 3, T, T)) of the mesh `cfg.mesh` describes."""
    if cfg.mesh.obj_path:
        template = MeshTemplate.from_obj(cfg.mesh.obj_path, symmetric=cfg.mesh.symmetric).to(device)
        texture = (read_image_tensor(cfg.mesh.texture_path)[None] if cfg.mesh.texture_path
                   else checker_texture(cfg.mesh.texture_size))
        return template, template.vertices, texture.to(device)
    template = build_template(cfg.template).to(device)
    generator = torch.Generator().manual_seed(cfg.seed)
    deformation = smooth_symmetric_map(1, 3, 32, cfg.mesh.deformation_cells, cfg.mesh.deformation_amplitude, generator)
    vertices = template.vertex_positions(deformation.to(device))[0]
    return template, vertices, checker_texture(cfg.mesh.texture_size).to(device)


def render_demo(cfg: RenderMeshConfig, device: torch.device) -> dict:
    """Render the turntable into OUT/turntable.png, export OUT/mesh.obj (+ .mtl, .png) and
    OUT/summary.json; returns the summary."""
    out = Path(cfg.out_dir)
    template, vertices, texture = demo_mesh(cfg, device)
    log.info("template: %s; device: %s", template.extra_repr(), device)
    renderer = make_renderer(cfg.image_size)
    with torch.no_grad():
        images, masks = render_turntable(template, renderer, vertices, texture[0], cfg.azimuths, cfg.scale, cfg.background)
    save_grid(out / "turntable.png", images, nrow=min(len(cfg.azimuths), 4))
    files = template.export(out / "mesh.obj", vertices, texture[0])
    summary = {
        "views": len(cfg.azimuths), "azimuths": cfg.azimuths, "mask_coverage": masks.mean(dim=(1, 2, 3)).tolist(),
        "vertices": template.num_vertices, "faces": template.num_faces,
        "files": [str(f) for f in files] + [str(out / "turntable.png")],
    }
    save_json(out / "summary.json", summary)
    log.info("wrote %s, %s and the turntable %s", files[0], files[2], out / "turntable.png")
    return summary
