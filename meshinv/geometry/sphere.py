"""The UV-sphere mesh templates of ConvMesh / MeshInversion, generated rather than shipped.

The original loads Blender-made OBJ files (`uvsphere_16rings.obj` for birds, `uvsphere_31rings.obj`
for cars). This module builds the same meshes: same vertex positions, same triangles (including
Blender's choice of quad diagonal) and the same texture coordinate per face corner, up to the
order in which vertices and faces are listed.

Construction (radius 1, y is the polar axis, north pole = +y):
  * vertex (ring r, segment s), r = 1..rings-1, s = 0..segments-1, sits at polar angle
    phi = r * pi / rings and azimuth theta = s * 2 pi / segments, with theta measured from +z
    towards +x: (sin phi sin theta, cos phi, sin phi cos theta); the poles are extra vertices.
  * texture u grows with the azimuth, u = ((s + segments/4) mod segments) / segments, so the seam
    (u = 0 and u = 1, both kept: one UV column is duplicated) is the meridian at x = -1, z = 0;
    v = 1 - r / rings. Each pole triangle has its own pole UV at the middle of its column.
  * each quad is split along one diagonal; the diagonal is mirrored across the plane x = 0, so the
    triangulation itself is left/right symmetric. Which diagonal the +x half uses differs between
    the two Blender files and is a parameter here.
"""

from __future__ import annotations

import numpy as np

from .obj_io import MeshData

# Diagonal used on the x > 0 half by the reference Blender files, keyed by ring count:
# "rising" splits the quad (r, s)-(r+1, s+1), "falling" splits (r, s+1)-(r+1, s).
_BLENDER_DIAGONAL = {16: "rising", 31: "falling"}


def uv_sphere(rings: int = 16, segments: int = 32, positive_x_diagonal: str | None = None) -> MeshData:
    """Build a UV sphere with `rings` latitude bands and `segments` longitude bands.

    rings=16, segments=32 gives 482 vertices, 960 triangles and 559 UVs (the bird template).
    `positive_x_diagonal` ("rising" or "falling") picks the quad split on the x > 0 half; by default
    it follows the reference Blender template of the same ring count ("rising" when unknown).
    """
    if rings < 2 or segments < 3 or segments % 4:
        raise ValueError(f"need rings >= 2 and segments a multiple of 4, got {rings}, {segments}")
    diagonal = positive_x_diagonal or _BLENDER_DIAGONAL.get(rings, "rising")
    if diagonal not in ("rising", "falling"):
        raise ValueError(f"positive_x_diagonal must be 'rising' or 'falling', got {diagonal!r}")

    phi = np.arange(1, rings) * np.pi / rings
    theta = np.arange(segments) * 2 * np.pi / segments
    ring_xyz = np.stack(
        [np.outer(np.sin(phi), np.sin(theta)), np.repeat(np.cos(phi)[:, None], segments, 1),
         np.outer(np.sin(phi), np.cos(theta))], axis=-1,
    ).reshape(-1, 3)
    # Exact zeros on the symmetry plane and at the poles, as in the Blender files.
    ring_xyz[np.abs(ring_xyz) < 1e-12] = 0.0
    north, south = 0, 1 + (rings - 1) * segments
    vertices = np.concatenate([[[0.0, 1.0, 0.0]], ring_xyz, [[0.0, -1.0, 0.0]]])

    def vid(r: int, s: int) -> int:  # r = 1..rings-1
        return 1 + (r - 1) * segments + (s % segments)

    # UV grid: column c = 0..segments (c = segments duplicates the seam), rows r = 1..rings-1.
    columns = segments + 1
    grid_u = np.arange(columns) / segments
    grid_v = 1.0 - np.arange(1, rings) / rings
    uvs = [np.stack(np.meshgrid(grid_u, grid_v), -1).reshape(-1, 2)]
    quarter = segments // 4

    def column(s: int) -> int:
        """UV column of segment s, as the left edge of the face column that starts at s."""
        return (s + quarter) % segments

    def uid(r: int, c: int) -> int:
        return (r - 1) * columns + c

    n_grid = (rings - 1) * columns
    pole_uvs = []
    faces, face_uvs = [], []
    for s in range(segments):
        c0 = column(s)
        c1 = c0 + 1  # may be `segments`: the duplicated seam column, never wrapped to 0
        mid_u = (c0 + 0.5) / segments
        # North pole fan (counter-clockwise seen from outside).
        pole_uvs.append([mid_u, 1.0])
        faces.append([north, vid(1, s), vid(1, s + 1)])
        face_uvs.append([n_grid + len(pole_uvs) - 1, uid(1, c0), uid(1, c1)])
        for r in range(1, rings - 1):
            a, b = vid(r, s), vid(r, s + 1)          # upper edge
            c, d = vid(r + 1, s), vid(r + 1, s + 1)  # lower edge
            ua, ub, uc, ud = uid(r, c0), uid(r, c1), uid(r + 1, c0), uid(r + 1, c1)
            positive_x = s < segments // 2
            rising = (diagonal == "rising") == positive_x
            if rising:  # split along a-d
                faces += [[a, c, d], [a, d, b]]
                face_uvs += [[ua, uc, ud], [ua, ud, ub]]
            else:  # split along b-c
                faces += [[a, c, b], [b, c, d]]
                face_uvs += [[ua, uc, ub], [ub, uc, ud]]
        pole_uvs.append([mid_u, 0.0])
        r = rings - 1
        faces.append([vid(r, s), south, vid(r, s + 1)])
        face_uvs.append([uid(r, c0), n_grid + len(pole_uvs) - 1, uid(r, c1)])
    uvs.append(np.asarray(pole_uvs))
    return MeshData(vertices, np.asarray(faces), np.concatenate(uvs), np.asarray(face_uvs))
