"""The dataset-level metrics fid_1, fid_10 and fid_12 (registered in meshinv/evaluation/metrics.py):
accumulators fed one image at a time (update), asked for one number at the end (compute, which
raises ValueError when there is none)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .images import FID12_AZIMUTHS, composite, novel_view_images
from .statistics import FIDStatistics, fid


class InputViewFID:
    """fid_1: masked inputs vs. masked reconstructions in the input view (black backgrounds)."""

    def __init__(self, env):
        self.env = env
        self.bank = env.feature_bank()
        self.keys: list[str] = []

    def update(self, ctx) -> None:
        image = ctx.require_input_image("fid_1")
        target = ctx.require_target_mask("fid_1")
        render, render_mask = ctx.pred_render()
        pair = torch.stack([composite(image, target, 0.0), composite(render, render_mask, 0.0)])
        key = f"fid_1/{ctx.record.image_id}"
        self.bank.add(key, pair)
        self.keys.append(key)

    def compute(self) -> tuple[float, int]:
        feats = [self.bank.features(k) for k in self.keys]
        if len(feats) < 2:
            raise ValueError(f"fid_1 needs at least 2 images, got {len(feats)}")
        real = FIDStatistics.from_activations(np.stack([f[0] for f in feats]))
        fake = FIDStatistics.from_activations(np.stack([f[1] for f in feats]))
        return fid(fake, real), len(feats)


class NovelViewFID:
    """fid_12 / fid_10: views about the canonical pose vs. the real-image statistics. The views are
    rendered once per image (all 12) and shared by both metrics through env.cache."""

    def __init__(self, env, azimuths: Sequence[float], name: str):
        self.env, self.name = env, name
        self.views = [FID12_AZIMUTHS.index(float(a)) for a in azimuths]
        self.reference = env.fid_reference()
        self.shared = env.cache.setdefault("fid_novel_views", {"ids": []})
        self.bank = env.feature_bank()

    def update(self, ctx) -> None:
        image_id = ctx.record.image_id
        if image_id in self.shared["ids"]:
            return  # already rendered for the other metric
        cfg = ctx.cfg
        texture = ctx.record.texture.to(ctx.device, torch.float32)
        views = novel_view_images(ctx.template, ctx.pred_vertices(), texture, FID12_AZIMUTHS, cfg.fid.render_size,
                                  cfg.novel_view_scale)
        self.bank.add(f"views/{image_id}", views)
        self.shared["ids"].append(image_id)

    def compute(self) -> tuple[float, int]:
        ids = self.shared["ids"]
        if not ids:
            raise ValueError(f"{self.name}: no image could be rendered")
        feats = np.concatenate([self.bank.features(f"views/{i}")[self.views] for i in ids])
        return fid(FIDStatistics.from_activations(feats), self.reference), len(ids)
