"""Batched mesh operations on (B, V, 3) vertex tensors with one shared (F, 3) face list."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit normals normalise((b - a) x (c - a)), (B, F, 3) from vertices (B, V, 3)."""
    a, b, c = (vertices[:, faces[:, k]] for k in range(3))
    return F.normalize(torch.cross(b - a, c - a, dim=-1), dim=-1)


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted average of the adjacent face normals, normalised, (B, V, 3)."""
    a, b, c = (vertices[:, faces[:, k]] for k in range(3))
    weighted = torch.cross(b - a, c - a, dim=-1)  # length = 2 * area
    normals = torch.zeros_like(vertices)
    for k in range(3):
        normals = normals.index_add(1, faces[:, k], weighted)
    return F.normalize(normals, dim=-1)


def face_adjacency(faces: torch.Tensor) -> torch.Tensor:
    """(F, 3) index of the face across each edge (k, k+1) of each face; -1 on a boundary edge.

    For a closed manifold mesh such as the UV sphere every entry is a valid face index.
    """
    faces = faces.cpu()
    n_faces = faces.shape[0]
    edges = torch.stack([faces, faces.roll(-1, dims=1)], dim=-1).reshape(-1, 2)  # (3F, 2)
    key_min = edges.min(dim=1).values
    key_max = edges.max(dim=1).values
    n = int(faces.max()) + 1
    keys = key_min * n + key_max
    order = torch.argsort(keys, stable=True)
    sorted_keys = keys[order]
    neighbour = torch.full((3 * n_faces,), -1, dtype=torch.long)
    same_as_next = sorted_keys[1:] == sorted_keys[:-1]
    first = order[:-1][same_as_next]
    second = order[1:][same_as_next]
    neighbour[first] = second // 3
    neighbour[second] = first // 3
    return neighbour.reshape(n_faces, 3)
