"""Mask IoU, the one definition every stage uses (inversion results, camera trust, evaluation)."""

from __future__ import annotations

import torch


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU |a and b| / |a or b| of masks (..., H, W) -> (...), float64.

    Boolean masks are used as they are; numeric ones count where the value is above 0.5 (soft or
    {0, 1} masks alike). Two empty masks agree perfectly: their IoU is 1."""
    a = a if a.dtype == torch.bool else a > 0.5
    b = b if b.dtype == torch.bool else b > 0.5
    intersection = (a & b).sum(dim=(-2, -1)).double()
    union = (a | b).sum(dim=(-2, -1)).double()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))
