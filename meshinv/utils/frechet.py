"""The Frechet distance between two Gaussians, and the statistics it is computed from: one owner for
the FIDs (meshinv/evaluation/fid/) and pretraining's PCA-space quality signal (training/loop.py).

    gaussian_statistics(x)        mean, covariance (ddof 1) and centred factor of samples (N, D)
    frechet_distance(mu1, s1, mu2, s2, factor1, factor2)
                                  ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), in float64
    PCAFrechet                    the distance of samples to a reference, in the reference's PCA space
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import scipy.linalg
import torch


def gaussian_statistics(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mu (D,), sigma (D, D), factor (D, N)) of samples (N, D) in float64: sigma is np.cov's
    (ddof 1) and factor = (x - mu)^T / sqrt(N - 1), so that sigma = factor factor^T. The factor makes
    the distance exact and fast when there are fewer samples than dimensions (frechet_distance)."""
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"samples must be (N, D), got {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 samples, got {x.shape[0]}")
    mu = x.mean(axis=0)
    factor = (x - mu).T / np.sqrt(x.shape[0] - 1)
    return mu, factor @ factor.T, factor


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray, factor1: Optional[np.ndarray],
                        factor2: Optional[np.ndarray]) -> Optional[float]:
    """tr sqrt(S1 S2) through a low-rank factor (S = A A^T): the nonzero eigenvalues of A A^T S_other
    are those of A^T S_other A (symmetric PSD, N x N), so the trace is the sum of their square roots.
    None when neither side has a factor narrower than D."""
    dim = sigma1.shape[0]
    candidates = [(f, other_f, other_s) for f, other_f, other_s in
                  ((factor1, factor2, sigma2), (factor2, factor1, sigma1)) if f is not None and f.shape[1] < dim]
    if not candidates:
        return None
    factor, other_factor, other_sigma = min(candidates, key=lambda c: c[0].shape[1])
    if other_factor is not None:
        cross = factor.T @ other_factor                     # S_small S_other ~ (A^T B)(A^T B)^T
        return float(np.linalg.svd(cross, compute_uv=False).sum())
    inner = factor.T @ other_sigma @ factor
    eigenvalues = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(eigenvalues, 0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     factor1: Optional[np.ndarray] = None, factor2: Optional[np.ndarray] = None) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) (the FID formula), in float64.

    With a low-rank factor of either covariance (gaussian_statistics; e.g. a few hundred images against
    2048 features) the trace of the square root is computed exactly from it; otherwise with scipy's
    sqrtm, as pytorch-fid does."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"Gaussians of different sizes: mean {mu1.shape} / covariance {sigma1.shape} vs. "
                         f"{mu2.shape} / {sigma2.shape} (statistics from different networks?)")
    diff = mu1 - mu2
    trace_sqrt = _trace_sqrt_product(sigma1, sigma2, factor1, factor2)
    if trace_sqrt is None:
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            # Near-singular product: regularise as pytorch-fid does.
            offset = np.eye(sigma1.shape[0]) * 1e-6
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
        trace_sqrt = float(np.trace(covmean.real))
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


class PCAFrechet:
    """Fit a PCA on reference samples (N, D); score other samples by the Frechet distance of their
    projections to the reference's (pretraining's quality signal: no Inception network needed)."""

    def __init__(self, reference: torch.Tensor, components: int = 32):
        x = reference.detach().double().reshape(reference.shape[0], -1).cpu().numpy()
        self.mean = x.mean(0)
        _, _, vt = np.linalg.svd(x - self.mean, full_matrices=False)
        self.basis = vt[: min(components, vt.shape[0])].T  # (D, k)
        self.mu, self.sigma, _ = gaussian_statistics(self.project(reference))

    def project(self, samples: torch.Tensor) -> np.ndarray:
        x = samples.detach().double().reshape(samples.shape[0], -1).cpu().numpy()
        return (x - self.mean) @ self.basis

    def __call__(self, samples: torch.Tensor) -> float:
        mu, sigma, _ = gaussian_statistics(self.project(samples))
        return frechet_distance(mu, sigma, self.mu, self.sigma)
