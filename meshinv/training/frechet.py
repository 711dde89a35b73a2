"""A cheap quality signal for pretraining: the Frechet distance between generated and ground-truth
maps in a PCA space of the flattened maps (no Inception network needed)."""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) (the FID formula), in float64."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        # Near-singular product: regularise as pytorch-fid does.
        offset = np.eye(sigma1.shape[0]) * 1e-6
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


class PCAFrechet:
    """Fit a PCA on reference samples (N, D); score other samples by the Frechet distance of their
    projections to the reference's."""

    def __init__(self, reference: torch.Tensor, components: int = 32):
        x = reference.detach().double().reshape(reference.shape[0], -1).cpu().numpy()
        self.mean = x.mean(0)
        _, _, vt = np.linalg.svd(x - self.mean, full_matrices=False)
        self.basis = vt[: min(components, vt.shape[0])].T  # (D, k)
        projected = self.project(reference)
        self.mu, self.sigma = projected.mean(0), np.cov(projected, rowvar=False)

    def project(self, samples: torch.Tensor) -> np.ndarray:
        x = samples.detach().double().reshape(samples.shape[0], -1).cpu().numpy()
        return (x - self.mean) @ self.basis

    def __call__(self, samples: torch.Tensor) -> float:
        projected = self.project(samples)
        return frechet_distance(projected.mean(0), np.cov(projected, rowvar=False), self.mu, self.sigma)
