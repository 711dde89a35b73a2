"""Wavefront OBJ with texture coordinates: read any triangle mesh, write textured meshes.

Textured export writes three files that MeshLab and Blender open together: `<name>.obj`
(vertices, `vt` texture coordinates, faces `v/vt`), `<name>.mtl` (one material whose diffuse map is
the texture) and `<name>.png`. OBJ texture coordinates have v = 0 at the bottom row of the image,
which is also our UV convention (see meshinv.render.texture), so the PNG is written as is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..utils.io import atomic_write, save_image


@dataclass
class MeshData:
    """A triangle mesh with per-corner texture coordinates (numpy, CPU).

    vertices      (V, 3) float
    faces         (F, 3) int, indices into vertices, counter-clockwise seen from outside
    uvs           (T, 2) float in [0, 1], v = 0 at the bottom of the texture image
    face_uv_index (F, 3) int, indices into uvs for each face corner
    """

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    face_uv_index: np.ndarray

    def __post_init__(self) -> None:
        self.vertices = np.asarray(self.vertices, dtype=np.float64).reshape(-1, 3)
        self.faces = np.asarray(self.faces, dtype=np.int64).reshape(-1, 3)
        self.uvs = np.asarray(self.uvs, dtype=np.float64).reshape(-1, 2)
        self.face_uv_index = np.asarray(self.face_uv_index, dtype=np.int64).reshape(-1, 3)
        if len(self.face_uv_index) != len(self.faces):
            raise ValueError(f"{len(self.faces)} faces but {len(self.face_uv_index)} face UV index rows")
        if len(self.faces) and (self.faces.min() < 0 or self.faces.max() >= len(self.vertices)):
            raise ValueError("face vertex index out of range")
        if len(self.face_uv_index) and (self.face_uv_index.min() < 0 or self.face_uv_index.max() >= len(self.uvs)):
            raise ValueError("face UV index out of range")

    @property
    def face_uvs(self) -> np.ndarray:
        """(F, 3, 2) texture coordinates of every face corner."""
        return self.uvs[self.face_uv_index]


def read_obj(path: str | os.PathLike) -> MeshData:
    """Read vertices, `vt` coordinates and faces; polygons are fan-triangulated.

    Faces without texture indices get UV index 0 of a single (0, 0) coordinate, so meshes without
    `vt` still load (and render untextured).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"OBJ file not found: {path}")
    vertices, uvs, faces, face_uvs = [], [], [], []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            try:
                if parts[0] == "v":
                    vertices.append([float(x) for x in parts[1:4]])
                elif parts[0] == "vt":
                    uvs.append([float(x) for x in parts[1:3]])
                elif parts[0] == "f":
                    corners = [_parse_corner(c, len(vertices), len(uvs)) for c in parts[1:]]
                    for k in range(1, len(corners) - 1):
                        tri = (corners[0], corners[k], corners[k + 1])
                        faces.append([c[0] for c in tri])
                        face_uvs.append([c[1] for c in tri])
            except (ValueError, IndexError) as e:
                raise ValueError(f"{path}:{line_no}: cannot parse {line.strip()!r}: {e}") from None
    if not faces:
        raise ValueError(f"{path}: no faces")
    face_uvs_arr = np.asarray(face_uvs, dtype=np.int64)
    if (face_uvs_arr < 0).any():
        if not (face_uvs_arr < 0).all():
            raise ValueError(f"{path}: some faces have texture coordinates and some do not")
        uvs, face_uvs_arr = [[0.0, 0.0]], np.zeros_like(face_uvs_arr)
    return MeshData(np.asarray(vertices), np.asarray(faces), np.asarray(uvs).reshape(-1, 2), face_uvs_arr)


def _parse_corner(token: str, n_vertices: int, n_uvs: int) -> tuple[int, int]:
    """'v', 'v/vt', 'v//vn' or 'v/vt/vn' -> 0-based (v, vt); vt = -1 when absent. Negative = relative."""
    fields = token.split("/")
    v = int(fields[0])
    v = v - 1 if v > 0 else n_vertices + v
    vt = -1
    if len(fields) > 1 and fields[1]:
        vt = int(fields[1])
        vt = vt - 1 if vt > 0 else n_uvs + vt
    return v, vt


def write_obj(path: str | os.PathLike, mesh: MeshData, material_file: str | None = None,
              material_name: str | None = None) -> None:
    """Write `mesh` as OBJ (atomically), optionally referencing a material library."""
    lines = ["# written by meshinv"]
    if material_file is not None:
        lines.append(f"mtllib {material_file}")
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in mesh.vertices]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in mesh.uvs]
    if material_name is not None:
        lines.append(f"usemtl {material_name}")
    lines += [
        "f " + " ".join(f"{v + 1}/{t + 1}" for v, t in zip(face, face_uv))
        for face, face_uv in zip(mesh.faces, mesh.face_uv_index)
    ]
    with atomic_write(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def export_textured_mesh(path: str | os.PathLike, mesh: MeshData, texture: np.ndarray) -> list[Path]:
    """Write `<stem>.obj`, `<stem>.mtl` and `<stem>.png` beside each other; return their paths.

    texture: (H, W, 3) image, float in [0, 1] or uint8; row 0 is the top of the image (v = 1).
    """
    obj_path = Path(path).with_suffix(".obj")
    stem = obj_path.stem
    mtl_path, png_path = obj_path.with_suffix(".mtl"), obj_path.with_suffix(".png")
    save_image(png_path, texture)
    mtl = (
        f"newmtl {stem}\nKa 1.000 1.000 1.000\nKd 1.000 1.000 1.000\nKs 0.000 0.000 0.000\n"
        f"d 1.0\nillum 1\nmap_Ka {png_path.name}\nmap_Kd {png_path.name}\n"
    )
    with atomic_write(mtl_path, "w") as f:
        f.write(mtl)
    write_obj(obj_path, mesh, material_file=mtl_path.name, material_name=stem)
    return [obj_path, mtl_path, png_path]
