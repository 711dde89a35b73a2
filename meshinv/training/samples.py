"""Samples of a generator with fixed z: the draws (pretraining's sample grids and Frechet distances,
scripts/sample.py), their turntable views and their mesh files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch

from ..geometry.template import MeshTemplate
from ..models.generator import truncated_normal
from ..render.settings import make_renderer
from ..render.views import render_turntable


@torch.no_grad()
def draw_samples(generator: torch.nn.Module, count: int, truncation_sigma: float, seed: int = 0,
                 classes: Sequence[int] = (), batch_size: int = 32
                 ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Textures (N, 3, T, T), deformation maps (N, 3, 32, 32) and class ids (N,) (None for an
    unconditional generator) of `count` samples: z from the truncated normal seeded with `seed`,
    classes cycling through `classes` (empty: all of the generator's), `batch_size` at a time."""
    device = next(generator.parameters()).device
    z = truncated_normal((count, generator.latent_dim), truncation_sigma, torch.Generator().manual_seed(seed))
    z = z.to(device)
    class_ids = None
    if generator.n_classes:
        wanted = list(classes) or list(range(generator.n_classes))
        class_ids = torch.tensor([wanted[i % len(wanted)] for i in range(count)], device=device)
    textures, maps = [], []
    for start in range(0, count, batch_size):
        chunk = slice(start, start + batch_size)
        t, m = generator(z[chunk], None if class_ids is None else class_ids[chunk])
        textures.append(t)
        maps.append(m)
    return torch.cat(textures), torch.cat(maps), class_ids


@torch.no_grad()
def sample_views(template: MeshTemplate, textures: torch.Tensor, maps: torch.Tensor, image_size: int,
                 azimuths: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Turntable views (N * K, 3, S, S) in [-1, 1] of N samples from K azimuths, sample by sample,
    and their vertices (N, V, 3)."""
    vertices = template.vertex_positions(maps)
    renderer = make_renderer(image_size)
    views = [render_turntable(template, renderer, v, t, list(azimuths))[0] for v, t in zip(vertices, textures)]
    return torch.cat(views), vertices


def export_samples(generator: torch.nn.Module, template: MeshTemplate, out_dir: str | Path, count: int,
                   truncation_sigma: float, seed: int = 0, classes: Sequence[int] = (), image_size: int = 128,
                   azimuths: Sequence[float] = (0.0, 90.0, 180.0, 270.0)) -> tuple[torch.Tensor, dict]:
    """Draw `count` samples, write each as <out_dir>/sample_<i>/mesh.obj + .mtl + .png, and return
    their turntable views (for a grid, K per sample) and a summary (meshes, classes, sigma)."""
    textures, maps, class_ids = draw_samples(generator, count, truncation_sigma, seed, classes)
    views, vertices = sample_views(template, textures, maps, image_size, azimuths)
    files = [str(template.export(Path(out_dir) / f"sample_{i:03d}" / "mesh.obj", vertices[i], textures[i])[0])
             for i in range(count)]
    return views, {"count": count, "meshes": files, "classes": None if class_ids is None else class_ids.tolist(),
                   "truncation_sigma": truncation_sigma}
