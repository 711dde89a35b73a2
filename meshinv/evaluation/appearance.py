"""How alike two renderings or two textures are, over a set of pixels or texels (docs/method.md section 8).

    psnr(a, b, mask)               peak signal-to-noise ratio (dB) of colours in [0, 1] over the mask
    ssim(a, b, mask)               mean structural similarity over the mask (ssim_map)
    ssim_map(a, b)                 SSIM at every pixel: Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03
    masked_mean(values, mask)      the mean of a (C, H, W) map over a mask
    mean_absolute_error(a, b, where)   mean |a - b| over the selected texels and the channels

Images are (C, H, W) in [0, 1] (ssim_map also takes a batch (N, C, H, W)), masks (H, W) bool;
means are taken in float64. The evaluation's appearance metrics (meshinv.evaluation.metrics:
psnr_input_view, ssim_input_view, psnr_novel_views, ssim_novel_views, uv_error_seen,
uv_error_unseen) are built on these.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Wang et al. 2004, "Image quality assessment: from error visibility to structural similarity".
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
DYNAMIC_RANGE = 1.0   # colours in [0, 1]


def _masked_channels(x: torch.Tensor, mask: torch.Tensor, name: str) -> torch.Tensor:
    """(C, H, W) values at a (H, W) mask -> (C, P) float64; an empty mask is an error."""
    if x.dim() != 3 or mask.shape != x.shape[-2:]:
        raise ValueError(f"{name}: expected (C, H, W) values and an (H, W) mask, got {tuple(x.shape)} and "
                         f"{tuple(mask.shape)}")
    if not bool(mask.any()):
        raise ValueError(f"{name}: the mask selects no pixel")
    return x.double()[:, mask.to(x.device, torch.bool)]


def psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    """PSNR in dB of two (C, H, W) images in [0, 1] over the pixels of `mask` (H, W): 10 log10(1 / MSE),
    the MSE taken over those pixels and every channel. Identical images give inf."""
    diff = _masked_channels(a, mask, "psnr") - _masked_channels(b, mask, "psnr")
    mse = float(diff.square().mean())
    return math.inf if mse == 0 else 10 * math.log10(DYNAMIC_RANGE ** 2 / mse)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """(size,) float64 normalised Gaussian weights, centred."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    weights = torch.exp(-x.square() / (2 * sigma ** 2))
    return weights / weights.sum()


def _blur(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) filtered channel by channel with the separable window, the image extended by
    reflection at its border so that every pixel has a value."""
    channels, pad = x.shape[1], window.numel() // 2
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    rows = window.to(x.device, x.dtype).reshape(1, 1, -1, 1).expand(channels, 1, -1, 1)
    x = F.conv2d(x, rows, groups=channels)
    return F.conv2d(x, rows.transpose(2, 3), groups=channels)


def ssim_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM of two images (C, H, W), or two batches (N, C, H, W), in [0, 1] at every pixel and channel.

    With local means mu, variances s^2 and covariance s_ab under a Gaussian window (SSIM_WINDOW,
    SSIM_SIGMA), C1 = (K1 L)^2, C2 = (K2 L)^2, L = 1:
        SSIM = (2 mu_a mu_b + C1)(2 s_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(s_a^2 + s_b^2 + C2)).
    It is symmetric in a and b, at most 1, and exactly 1 where a = b (numerator and denominator are
    then computed by the same float operations). The images must be larger than the window's half
    width (reflection at the border). Computed in the images' dtype, at least float32: float64
    convolutions are several times slower on a CPU, and float32 rounding of the moments (about
    1e-7, against C2 = 9e-4) moved single pixels of 256-px renders by up to 3e-4 and their mean
    over the object by 1e-7.
    """
    if a.shape != b.shape or a.dim() not in (3, 4):
        raise ValueError(f"ssim: expected two images of the same shape, (C, H, W) or (N, C, H, W), got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    dtype = torch.promote_types(a.dtype, torch.float32)
    batch = a.to(dtype).reshape(-1, *a.shape[-3:]), b.to(dtype).reshape(-1, *b.shape[-3:])
    channels = a.shape[-3]
    # One filtering pass for the five local moments.
    moments = _blur(torch.cat([batch[0], batch[1], batch[0] * batch[0], batch[1] * batch[1], batch[0] * batch[1]],
                              dim=1), gaussian_window())
    mu_a, mu_b, aa, bb, ab = moments.split(channels, dim=1)
    var_a, var_b, cov = aa - mu_a * mu_a, bb - mu_b * mu_b, ab - mu_a * mu_b
    c1, c2 = (SSIM_K1 * DYNAMIC_RANGE) ** 2, (SSIM_K2 * DYNAMIC_RANGE) ** 2
    value = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2))
    return value.reshape(a.shape)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, name: str = "masked_mean") -> float:
    """Mean of (C, H, W) values over the pixels of `mask` (H, W) and the channels, in float64."""
    return float(_masked_channels(values, mask, name).mean())


def ssim(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean SSIM (ssim_map, computed on the whole images) over the pixels of `mask` (H, W) and the
    channels, for two (C, H, W) images in [0, 1]."""
    return masked_mean(ssim_map(a, b), mask, "ssim")


def mean_absolute_error(a: torch.Tensor, b: torch.Tensor, where: torch.Tensor) -> float:
    """Mean |a - b| of two (C, N) value sets over the entries `where` (N,) selects and the channels."""
    if not bool(where.any()):
        raise ValueError("mean_absolute_error: nothing is selected")
    return float((a.double() - b.double())[:, where].abs().mean())
