"""Regularisers of the inversion and pretraining objectives (docs/method.md section 7), one value per image."""

from __future__ import annotations

import torch

from ..geometry.mesh_ops import face_normals


def smoothness_loss(vertices: torch.Tensor, faces: torch.Tensor, face_neighbours: torch.Tensor) -> torch.Tensor:
    """Flatness of the surface: how much each face's normal differs from its edge neighbours'.

    L = F/2 * sum_{k=0..2} mean_f (n_f . n_{g_k(f)} - 1)^2, with g_k(f) the face across edge k of f.
    As the original's loss_flat, except that the mean is per image instead of over the whole
    batch (the batch mean of these values is the original's number). Invariant to rotation,
    translation and uniform scale of the mesh; 0 only for a flat surface.

    Args:
        vertices: (B, V, 3) vertex positions (after deformation, any frame).
        faces: (F, 3) long vertex indices.
        face_neighbours: (F, 3) long index of the face across each edge (MeshTemplate's buffer);
            -1 marks a boundary edge, which contributes 0 (the mean still divides by F).

    Returns:
        (B,) loss.
    """
    if vertices.dim() != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must be (B, V, 3), got {tuple(vertices.shape)}")
    if face_neighbours.shape != faces.shape:
        raise ValueError(f"face_neighbours {tuple(face_neighbours.shape)} must match faces {tuple(faces.shape)}")
    normals = face_normals(vertices, faces)  # (B, F, 3)
    num_faces = faces.shape[0]
    has_neighbour = face_neighbours >= 0
    total = vertices.new_zeros(vertices.shape[0])
    for k in range(3):
        neighbour_normals = normals[:, face_neighbours[:, k].clamp_min(0)]
        cosine = (normals * neighbour_normals).sum(-1)
        penalty = torch.where(has_neighbour[:, k], (cosine - 1) ** 2, torch.zeros_like(cosine))
        total = total + penalty.mean(dim=1)
    return total * (num_faces / 2.0)


def latent_nll(z: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of z under N(0, I), up to a constant, averaged: mean(z^2 / 2) per row.

    Args:
        z: (B, D) latent codes.

    Returns:
        (B,) loss.
    """
    if z.dim() != 2:
        raise ValueError(f"z must be (B, D), got {tuple(z.shape)}")
    return (z * z / 2).mean(dim=1)
