"""The mesh template that the generator deforms: UV bookkeeping, symmetry, deformation and colours.

The generator predicts two UV-space maps: a deformation map D (B, 3, 32, 32) of per-vertex offsets
in each vertex's local frame (normal, tangent, bitangent), and a texture (B, 3, T, T). The template
turns them into a mesh: it samples D at every vertex's UV position (its "topo map" coordinate) and
renders the texture through its per-corner UVs.

Symmetric templates (the default, as in the paper) have a mirror plane x = 0. Vertices are split
into "neg" (x < -1e-4), "pos" (x > 1e-4, the mirror partner of each neg vertex, in matching order)
and "zero" (on the plane); only the non-negative half ("nonneg" = pos then zero) is sampled and the
neg half copies its partner's offset with x negated. All formulas follow docs/method.md section 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .mesh_ops import face_adjacency, face_normals, vertex_normals
from .obj_io import MeshData, export_textured_mesh, read_obj
from ..utils.config import require
from ..utils.io import file_sha256
from .sphere import uv_sphere

_PLANE_EPS = 1e-4


@dataclass
class TemplateConfig:
    """Which template mesh to use."""

    obj_path: Optional[str] = None  # an OBJ with texture coordinates; None = generated UV sphere
    rings: int = 16                 # UV sphere latitude bands (16: birds, 31: cars, as the original)
    segments: int = 32              # UV sphere longitude bands
    symmetric: bool = True          # mirror symmetry about x = 0 (the paper's setting)

    def validate(self) -> None:
        require(self.rings >= 2, "rings", f"must be >= 2, got {self.rings}")
        require(self.segments >= 4 and self.segments % 4 == 0, "segments",
                f"must be a positive multiple of 4, got {self.segments}")

    def identity(self, content: bool = True) -> dict:
        """What makes two configs the same mesh (a generator checkpoint records it): the UV sphere's
        rings and segments, or the OBJ file (its name, and with `content` its sha256 when the file
        is there), and the symmetry."""
        if self.obj_path:
            found = content and Path(self.obj_path).is_file()
            return {"obj_path": self.obj_path, "obj_sha256": file_sha256(self.obj_path) if found else None,
                    "symmetric": self.symmetric}
        return {"rings": self.rings, "segments": self.segments, "symmetric": self.symmetric}


def build_template(cfg: TemplateConfig) -> "MeshTemplate":
    if cfg.obj_path:
        return MeshTemplate.from_obj(cfg.obj_path, symmetric=cfg.symmetric)
    return MeshTemplate.uv_sphere(cfg.rings, cfg.segments, symmetric=cfg.symmetric)


def circular_pad_width(x: torch.Tensor, amount: int = 1) -> torch.Tensor:
    """Pad (..., H, W) circularly along W (the u direction wraps around the sphere)."""
    return torch.cat([x[..., -amount:], x, x[..., :amount]], dim=-1)


def _symmetry_split(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of neg, pos (mirror partners of neg, same order) and zero vertices."""
    neg = np.nonzero(vertices[:, 0] < -_PLANE_EPS)[0]
    zero = np.nonzero(np.abs(vertices[:, 0]) < _PLANE_EPS)[0]
    mirrored = vertices[neg] * np.array([-1.0, 1.0, 1.0])
    dist = np.linalg.norm(mirrored[:, None, :] - vertices[None, :, :], axis=-1)
    pos = dist.argmin(axis=1)
    if len(neg) and dist[np.arange(len(neg)), pos].max() > _PLANE_EPS:
        raise ValueError("template is not mirror-symmetric about x = 0 (a vertex has no mirror partner)")
    if len(set(pos.tolist())) != len(pos) or (vertices[pos, 0] <= _PLANE_EPS).any():
        raise ValueError("template is not mirror-symmetric about x = 0 (mirror partners are not unique)")
    if len(neg) + len(pos) + len(zero) != len(vertices):
        raise ValueError("template is not mirror-symmetric about x = 0 (vertex counts do not add up)")
    return neg, pos, zero


def _topo_map(mesh: MeshData) -> np.ndarray:
    """Per-vertex UV averaged over the corners that use it, u = 1 wrapped to 0, mapped to [-1, 1]
    as (2u - 1, -(2v - 1)) (grid_sample coordinates with image row 0 at v = 1)."""
    corner_uv = mesh.face_uvs.reshape(-1, 2).copy()
    corner_uv[np.isclose(corner_uv[:, 0], 1.0, atol=1e-6), 0] = 0.0
    corner_vertex = mesh.faces.reshape(-1)
    total = np.zeros((len(mesh.vertices), 2))
    count = np.zeros(len(mesh.vertices))
    np.add.at(total, corner_vertex, corner_uv)
    np.add.at(count, corner_vertex, 1.0)
    if (count == 0).any():
        raise ValueError(f"{int((count == 0).sum())} template vertices are used by no face")
    uv = total / count[:, None]
    return np.stack([2 * uv[:, 0] - 1, -(2 * uv[:, 1] - 1)], axis=-1)


def _tangent_frames(vertices: np.ndarray) -> np.ndarray:
    """(V, 3, 3) rows (normal, tangent, bitangent); tangent = bitangent = 0 at the two poles."""
    normals = vertices / np.linalg.norm(vertices, axis=1, keepdims=True)
    up = np.array([0.0, 1.0, 0.0])
    tangents = np.cross(normals, up)
    length = np.linalg.norm(tangents, axis=1, keepdims=True)
    tangents = np.divide(tangents, length, out=np.zeros_like(tangents), where=length > 1e-12)
    bitangents = np.cross(normals, tangents)
    poles = [int(vertices[:, 1].argmax()), int(vertices[:, 1].argmin())]
    tangents[poles] = 0.0
    bitangents[poles] = 0.0
    return np.stack([normals, tangents, bitangents], axis=1)


class MeshTemplate(nn.Module):
    """A template mesh whose tensors are buffers, so `.to(device)` moves all of them.

    Buffers: `vertices` (V, 3), `faces` (F, 3), `uvs` (T, 2), `face_uv_index` (F, 3),
    `topo_map` (V, 2) in [-1, 1], `tangent_frames` (V, 3, 3), `face_neighbours` (F, 3), and for
    symmetric templates `neg_index`, `pos_index`, `zero_index`, `nonneg_index` (pos then zero) and
    `plane_mask` (V, 3), which zeroes the x offset of the vertices on the mirror plane.
    """

    def __init__(self, mesh: MeshData, symmetric: bool = True):
        super().__init__()
        self.symmetric = symmetric
        # Buffers are non-persistent: the template is rebuilt from its config, and its tensors must
        # never leak into the state_dict of a module that holds it (released generator checkpoints
        # have exact keys).
        as_float = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
        as_long = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.long)  # noqa: E731
        self.register_buffer("vertices", as_float(mesh.vertices), persistent=False)
        self.register_buffer("faces", as_long(mesh.faces), persistent=False)
        self.register_buffer("uvs", as_float(mesh.uvs), persistent=False)
        self.register_buffer("face_uv_index", as_long(mesh.face_uv_index), persistent=False)
        self.register_buffer("topo_map", as_float(_topo_map(mesh)), persistent=False)
        self.register_buffer("tangent_frames", as_float(_tangent_frames(mesh.vertices)), persistent=False)
        self.register_buffer("face_neighbours", face_adjacency(as_long(mesh.faces)), persistent=False)
        if symmetric:
            neg, pos, zero = _symmetry_split(mesh.vertices)
            self.register_buffer("neg_index", as_long(neg), persistent=False)
            self.register_buffer("pos_index", as_long(pos), persistent=False)
            self.register_buffer("zero_index", as_long(zero), persistent=False)
            self.register_buffer("nonneg_index", as_long(np.concatenate([pos, zero])), persistent=False)
            plane_mask = torch.ones(len(mesh.vertices), 3)
            plane_mask[zero, 0] = 0.0  # no x offset for vertices on the mirror plane
            self.register_buffer("plane_mask", plane_mask, persistent=False)

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def uv_sphere(cls, rings: int = 16, segments: int = 32, symmetric: bool = True) -> "MeshTemplate":
        return cls(uv_sphere(rings, segments), symmetric=symmetric)

    @classmethod
    def from_obj(cls, path: str | os.PathLike, symmetric: bool = True) -> "MeshTemplate":
        return cls(read_obj(path), symmetric=symmetric)

    @property
    def num_vertices(self) -> int:
        return self.vertices.shape[0]

    @property
    def num_faces(self) -> int:
        return self.faces.shape[0]

    def extra_repr(self) -> str:
        return f"vertices={self.num_vertices}, faces={self.num_faces}, uvs={self.uvs.shape[0]}, symmetric={self.symmetric}"

    # -- UV-map sampling ---------------------------------------------------------------------------
    def _sample_at_vertices(self, uv_map: torch.Tensor, shift_width: int) -> torch.Tensor:
        """Bilinearly sample a (B, C, H, W) UV map at the (nonneg) vertices' topo coordinates.

        The map is padded so that u wraps around; in the symmetric case the u coordinate is shifted
        and scaled by the ConvMesh compensation with delta = 1/(2 w), e = (w + 1)/w where
        w = `shift_width`. Returns (B, N, C).
        """
        if uv_map.dim() != 4:
            raise ValueError(f"expected a (B, C, H, W) UV map, got shape {tuple(uv_map.shape)}")
        if self.symmetric:
            topo = self.topo_map[self.nonneg_index]
            padded = circular_pad_width(uv_map, 1)
            delta = 1.0 / (2 * shift_width)
            expansion = (shift_width + 1) / shift_width
            u = (topo[:, 0] + 1 + 2 * delta - expansion) / expansion
            topo = torch.stack([u, topo[:, 1]], dim=-1)
        else:
            topo = self.topo_map
            padded = torch.cat([uv_map, uv_map[..., :1]], dim=-1)
        grid = topo.to(uv_map.dtype)[None, :, None, :].expand(uv_map.shape[0], -1, -1, -1)
        sampled = F.grid_sample(padded, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        return sampled[..., 0].permute(0, 2, 1)

    def _scatter_symmetric(self, half: torch.Tensor, mirror_sign: torch.Tensor) -> torch.Tensor:
        """(B, Nnonneg, C) values of the nonneg vertices -> (B, V, C), neg = pos partner * sign."""
        full = half.new_zeros(half.shape[0], self.num_vertices, half.shape[2])
        full = full.index_copy(1, self.nonneg_index, half)
        return full.index_copy(1, self.neg_index, full[:, self.pos_index] * mirror_sign)

    def vertex_positions(self, deformation_map: torch.Tensor) -> torch.Tensor:
        """Object-space vertex positions (B, V, 3) from a deformation map (B, 3, H, W)."""
        local = self._sample_at_vertices(deformation_map, shift_width=deformation_map.shape[-1])
        frames = self.tangent_frames[self.nonneg_index] if self.symmetric else self.tangent_frames
        offsets = torch.einsum("bnk,nkd->bnd", local, frames.to(local.dtype))
        if self.symmetric:
            sign = offsets.new_tensor([-1.0, 1.0, 1.0])
            # Vertices on the mirror plane stay on it.
            offsets = self._scatter_symmetric(offsets, sign) * self.plane_mask.to(offsets.dtype)
        return self.vertices.to(offsets.dtype)[None] + offsets

    def vertex_colors(self, texture: torch.Tensor) -> torch.Tensor:
        """Per-vertex colours (B, V, C) sampled from a texture (B, C, T, T), for visualisation.

        As the original, the symmetric compensation uses the padded width (T + 2) here and neg
        vertices copy their partner's colour unchanged. The original also zeroed the red channel
        of the vertices on the mirror plane; that defect is not reproduced.
        """
        colors = self._sample_at_vertices(texture, shift_width=texture.shape[-1] + 2)
        if self.symmetric:
            colors = self._scatter_symmetric(colors, colors.new_ones(colors.shape[-1]))
        return colors

    # -- rendering ---------------------------------------------------------------------------------
    def render_inputs(self, texture: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-corner UVs (F, 3, 2) and the padded texture that the renderer samples."""
        uvs, padded = self.texture_coordinates(self.uvs, texture)
        return uvs[self.face_uv_index], padded

    def texture_coordinates(self, uvs: torch.Tensor, texture: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """UV points (..., 2) of this template's layout -> the same points in the padded texture
        that the renderer samples (align_corners), and that texture.

        The padding makes u wrap around the seam; in the symmetric case u is remapped to the padded
        texture as u' = (u + delta) / e with delta = 1/(2 T_w), e = (T_w + 1)/T_w, so that texel k
        of the unpadded texture is centred at u = (k + 0.5)/T_w.
        """
        uvs = uvs.to(texture.dtype)
        if self.symmetric:
            width = texture.shape[-1]
            delta = 1.0 / (2 * width)
            expansion = (width + 1) / width
            uvs = torch.stack([(uvs[..., 0] + delta) / expansion, uvs[..., 1]], dim=-1)
            padded = circular_pad_width(texture, 1)
        else:
            padded = torch.cat([texture, texture[..., :1]], dim=-1)
        return uvs, padded

    def render(self, renderer, vertices_ndc: torch.Tensor, texture: torch.Tensor, **kwargs):
        """Render vertices already in normalised device coordinates with this template's UVs."""
        face_uvs, padded = self.render_inputs(texture)
        return renderer(vertices_ndc, self.faces, face_uvs, padded, **kwargs)

    # -- geometry ----------------------------------------------------------------------------------
    def face_normals(self, vertices: torch.Tensor) -> torch.Tensor:
        return face_normals(vertices, self.faces)

    def vertex_normals(self, vertices: torch.Tensor) -> torch.Tensor:
        return vertex_normals(vertices, self.faces)

    def mesh_data(self, vertices: torch.Tensor) -> MeshData:
        """This template's connectivity and UVs with the given (V, 3) vertex positions."""
        return MeshData(
            vertices.detach().cpu().double().numpy(), self.faces.cpu().numpy(),
            self.uvs.cpu().numpy(), self.face_uv_index.cpu().numpy(),
        )

    def export(self, path: str | os.PathLike, vertices: torch.Tensor, texture: torch.Tensor) -> list[Path]:
        """Write OBJ + MTL + PNG for one mesh: vertices (V, 3), texture (3, H, W) in [-1, 1]."""
        if vertices.dim() != 2 or texture.dim() != 3:
            raise ValueError("export takes one mesh: vertices (V, 3) and texture (3, H, W)")
        image = ((texture.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
        return export_textured_mesh(path, self.mesh_data(vertices), image)
