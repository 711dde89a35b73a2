"""Losses that compare a rendering with the target pixel by pixel (the alternatives of the paper's
loss ablation, docs/method.md section 7; the inversion's default terms are the Chamfer ones).

    masked_l1_loss  mean |rendering - target| over the target mask's pixels (texture)
    soft_iou_loss   1 - soft IoU of a soft silhouette and the target mask (mask)
"""

from __future__ import annotations

import torch


def _check_same_grid(name: str, a: torch.Tensor, other: str, b: torch.Tensor) -> None:
    if a.dim() != 4 or b.dim() != 4 or a.shape[0] != b.shape[0] or a.shape[2:] != b.shape[2:]:
        raise ValueError(f"{name} {tuple(a.shape)} and {other} {tuple(b.shape)} must be (B, C, H, W) on one grid")


def masked_l1_loss(rendered: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute colour difference over the target mask's pixels, per image.

    L = sum_p m_p mean_c |r_pc - t_pc| / sum_p m_p, m = (mask > 0.5). Every pixel of the target
    mask counts, whatever the rendering shows there: where the rendering does not cover it, the
    rendering's background is compared (0, mid grey, in the inversion objective), a penalty the
    texture cannot reduce and only the geometry (through the mask term) can. The rendering outside
    the target mask is not compared. A constant colour offset c gives exactly |c|.

    Args:
        rendered, target: (B, C, H, W) images; mask: (B, 1, H, W), not differentiated.

    Returns:
        (B,) loss, differentiable w.r.t. both images; 0 for an empty mask.
    """
    _check_same_grid("rendered", rendered, "target", target)
    _check_same_grid("rendered", rendered, "mask", mask)
    inside = (mask.detach() > 0.5).to(rendered.dtype)
    difference = (rendered - target).abs().mean(dim=1, keepdim=True)
    return (difference * inside).sum(dim=(1, 2, 3)) / inside.sum(dim=(1, 2, 3)).clamp_min(1)


def soft_iou_loss(silhouette: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - soft IoU of a silhouette and a mask (both (B, 1, H, W) in [0, 1]), per image.

    IoU = sum s m / sum (s + m - s m), the rasterised mask loss of the paper's ablation (as CMR's
    and ConvMesh's training use a rendered silhouette). For a {0, 1} mask, sum (s + m - 2 s m) =
    sum |s - m|, so L = sum |s - m| / union <= sum |s - m| / sum m: 0 when the silhouette is the
    mask, at most the silhouette's L1 error over the mask's area, and 1 when they do not overlap.

    Returns:
        (B,) loss in [0, 1], differentiable w.r.t. the silhouette (and the mask); 0 where both are
        empty.
    """
    _check_same_grid("silhouette", silhouette, "mask", mask)
    mask = mask.to(silhouette.dtype)
    intersection = (silhouette * mask).sum(dim=(1, 2, 3))
    union = (silhouette + mask - silhouette * mask).sum(dim=(1, 2, 3))
    return torch.where(union > 0, 1 - intersection / union.clamp_min(torch.finfo(union.dtype).tiny),
                       torch.zeros_like(union))
