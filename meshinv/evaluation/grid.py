"""report_grid.png's rows: per image the input, the reconstruction over it, the prediction's novel
views and (with ground truth) the ground-truth mesh's, from meshinv.render.views."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..render.settings import make_renderer
from ..render.views import render_turntable
from ..utils.images import read_image_tensor
from .metrics import EvaluationContext


def _tile(path: Path, size: int) -> torch.Tensor:
    """(3, size, size) in [-1, 1] from an image file; mid grey (0) if it is missing."""
    if not path.is_file():
        return torch.zeros(3, size, size)
    image = read_image_tensor(path)[None]
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=image.shape[-1] > size)[0].clamp(-1, 1)


def grid_row(folder: Path, ctx: EvaluationContext, with_gt: bool) -> tuple[torch.Tensor, list[str]]:
    """One row of report_grid.png for the image in `folder` (its record is ctx.record): input, render
    over input, the prediction's novel views, and (with ground truth) the GT mesh's. Returns
    ((K, 3, S, S) in [-1, 1] on CPU, column names)."""
    cfg = ctx.cfg
    size = cfg.grid_image_size
    renderer = make_renderer(size)
    views = len(cfg.grid_azimuths)
    tiles = [_tile(folder / "input.png", size), _tile(folder / "render.png", size)]
    columns = ["input", "reconstruction"] + [f"pred {a:g}" for a in cfg.grid_azimuths]
    with torch.no_grad():
        texture = ctx.record.texture.to(ctx.device, torch.float32)
        pred, _ = render_turntable(ctx.template, renderer, ctx.pred_vertices(), texture, cfg.grid_azimuths,
                                   scale=cfg.novel_view_scale, background=1.0)
        tiles.extend(pred.cpu())
        if with_gt:
            columns += [f"GT {a:g}" for a in cfg.grid_azimuths]
            if "vertices" in ctx.gt:
                gt_texture = ctx.gt.get("texture", torch.zeros(3, 8, 8)).to(ctx.device, torch.float32)
                gt, _ = render_turntable(ctx.template, renderer, ctx.gt["vertices"].to(ctx.device, torch.float32),
                                         gt_texture, cfg.grid_azimuths, scale=cfg.novel_view_scale, background=1.0)
                tiles.extend(gt.cpu())
            else:
                tiles.extend(torch.zeros(views, 3, size, size))
    return torch.stack(tiles), columns
