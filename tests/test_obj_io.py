"""OBJ reading/writing and textured export (OBJ + MTL + PNG), checked with an independent loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from meshinv.geometry import MeshData, MeshTemplate, read_obj, write_obj

trimesh = pytest.importorskip("trimesh")


def write_text(path, text: str):
    path.write_text(text)
    return path


def small_mesh() -> MeshData:
    # A tetrahedron with distinct UVs per corner.
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64) * 0.5 + 0.125
    faces = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    uvs = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.25, 0.75], [0.5, 0.5]])
    face_uv_index = np.array([[0, 1, 2], [2, 3, 4], [4, 0, 1], [3, 4, 0]])
    return MeshData(vertices, faces, uvs, face_uv_index)


# -- read / write ----------------------------------------------------------------------------------------

def test_round_trip(tmp_path):
    mesh = small_mesh()
    write_obj(tmp_path / "m.obj", mesh)
    back = read_obj(tmp_path / "m.obj")
    np.testing.assert_allclose(back.vertices, mesh.vertices, atol=1e-6)
    np.testing.assert_array_equal(back.faces, mesh.faces)
    np.testing.assert_allclose(back.uvs, mesh.uvs, atol=1e-6)
    np.testing.assert_array_equal(back.face_uv_index, mesh.face_uv_index)
    np.testing.assert_allclose(back.face_uvs, mesh.face_uvs, atol=1e-6)
    assert back.faces.dtype == np.int64 and back.vertices.dtype == np.float64


def test_round_trip_sphere_with_material(tmp_path):
    mesh = MeshTemplate.uv_sphere().mesh_data(MeshTemplate.uv_sphere().vertices)
    write_obj(tmp_path / "s.obj", mesh, material_file="s.mtl", material_name="mat")
    text = (tmp_path / "s.obj").read_text()
    assert "mtllib s.mtl" in text and "usemtl mat" in text
    back = read_obj(tmp_path / "s.obj")
    np.testing.assert_allclose(back.vertices, mesh.vertices, atol=1e-6)
    np.testing.assert_array_equal(back.faces, mesh.faces)
    np.testing.assert_allclose(back.face_uvs, mesh.face_uvs, atol=1e-6)


def test_quads_are_fan_triangulated(tmp_path):
    path = write_text(tmp_path / "q.obj", """# a quad and a pentagon
v 0 0 0
v 1 0 0
v 1 1 0
v 0 1 0
v -1 0.5 0
vt 0 0
vt 1 0
vt 1 1
vt 0 1
vt 0.5 0.5
f 1/1 2/2 3/3 4/4
f 1/1 4/4 5/5 2/2 3/3
""")
    mesh = read_obj(path)
    np.testing.assert_array_equal(mesh.faces, [[0, 1, 2], [0, 2, 3], [0, 3, 4], [0, 4, 1], [0, 1, 2]])
    np.testing.assert_array_equal(mesh.face_uv_index, [[0, 1, 2], [0, 2, 3], [0, 3, 4], [0, 4, 1], [0, 1, 2]])
    assert mesh.vertices.shape == (5, 3) and mesh.uvs.shape == (5, 2)


def test_negative_indices_are_relative(tmp_path):
    path = write_text(tmp_path / "n.obj", """v 0 0 0
v 1 0 0
v 0 1 0
vt 0 0
vt 1 0
vt 0 1
f -3/-3 -2/-2 -1/-1
v 0 0 1
vt 0.5 0.5
f -4/-1 -2/-2 -1/-4
""")
    mesh = read_obj(path)
    np.testing.assert_array_equal(mesh.faces, [[0, 1, 2], [0, 2, 3]])
    np.testing.assert_array_equal(mesh.face_uv_index, [[0, 1, 2], [3, 2, 0]])


def test_normals_only_corners_and_missing_vt(tmp_path):
    path = write_text(tmp_path / "vn.obj", """o shape
v 0 0 0
v 1 0 0
v 0 1 0
v 0 0 1
vn 0 0 1
s off
f 1//1 2//1 3//1
f 1 2 4
""")
    mesh = read_obj(path)
    np.testing.assert_array_equal(mesh.faces, [[0, 1, 2], [0, 1, 3]])
    # No texture coordinates: a single (0, 0) UV used by every corner.
    np.testing.assert_array_equal(mesh.uvs, [[0.0, 0.0]])
    np.testing.assert_array_equal(mesh.face_uv_index, np.zeros((2, 3), dtype=np.int64))


def test_full_corner_syntax(tmp_path):
    path = write_text(tmp_path / "full.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\nvn 0 0 1\n"
                                             "f 1/3/1 2/2/1 3/1/1\n")
    mesh = read_obj(path)
    np.testing.assert_array_equal(mesh.face_uv_index, [[2, 1, 0]])


def test_malformed_line_names_file_and_line(tmp_path):
    path = write_text(tmp_path / "bad.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 x\n")
    with pytest.raises(ValueError) as info:
        read_obj(path)
    message = str(info.value)
    assert "bad.obj" in message and ":4:" in message

    path = write_text(tmp_path / "badv.obj", "v 0 0 0\nv 1 zero 0\nv 0 1 0\nf 1 2 3\n")
    with pytest.raises(ValueError, match=r"badv\.obj:2:"):
        read_obj(path)


def test_out_of_range_index_and_no_faces(tmp_path):
    with pytest.raises(ValueError):
        read_obj(write_text(tmp_path / "range.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n"))
    with pytest.raises(ValueError, match="no faces"):
        read_obj(write_text(tmp_path / "empty.obj", "v 0 0 0\n"))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.obj"):
        read_obj(tmp_path / "nothere.obj")


# -- textured export ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    template = MeshTemplate.uv_sphere()
    gen = torch.Generator().manual_seed(0)
    vertices = template.vertices * torch.tensor([1.2, 0.8, 1.5]) + torch.randn(482, 3, generator=gen) * 0.01
    texture = torch.rand(3, 24, 40, generator=gen) * 2.2 - 1.1  # a little outside [-1, 1]: clamped
    paths = template.export(folder / "bird", vertices, texture)
    return folder, template, vertices, texture, paths


def test_export_writes_three_files(exported):
    folder, _, _, _, paths = exported
    assert [p.name for p in paths] == ["bird.obj", "bird.mtl", "bird.png"]
    assert all(p.is_file() for p in paths)
    # Atomic writes leave no temporary files behind.
    assert sorted(p.name for p in folder.iterdir()) == ["bird.mtl", "bird.obj", "bird.png"]
    mtl = (folder / "bird.mtl").read_text()
    assert "map_Kd bird.png" in mtl.splitlines()
    assert str(folder) not in mtl  # relative reference
    obj = (folder / "bird.obj").read_text()
    assert "mtllib bird.mtl" in obj.splitlines()


def test_export_png_is_the_texture(exported):
    folder, _, _, texture, _ = exported
    png = np.asarray(Image.open(folder / "bird.png"))
    assert png.shape == (24, 40, 3) and png.dtype == np.uint8
    expected = ((texture.clamp(-1, 1) + 1) / 2 * 255).permute(1, 2, 0).numpy()
    assert np.abs(png.astype(np.float64) - expected).max() <= 1.0
    # Row 0 of the texture is row 0 of the image (v = 1 at the top, as OBJ expects).
    assert np.abs(png[0].astype(np.float64) - expected[0]).max() <= 1.0


def test_export_loads_in_trimesh(exported):
    folder, template, vertices, texture, _ = exported
    mesh = trimesh.load(folder / "bird.obj", process=False, maintain_order=True)
    assert isinstance(mesh, trimesh.Trimesh)
    np.testing.assert_allclose(mesh.vertices, vertices.numpy(), atol=1e-5)
    np.testing.assert_array_equal(mesh.faces, template.faces.numpy())
    # trimesh found the texture through the MTL and loads the PNG we wrote.
    image = np.asarray(mesh.visual.material.image.convert("RGB"))
    png = np.asarray(Image.open(folder / "bird.png").convert("RGB"))
    np.testing.assert_array_equal(image, png)
    expected = ((texture.clamp(-1, 1) + 1) / 2 * 255).permute(1, 2, 0).numpy()
    assert np.abs(image.astype(np.float64) - expected).max() <= 1.0


def test_export_uvs_survive_in_trimesh(exported):
    folder, template, vertices, _, _ = exported
    # Without maintain_order trimesh splits vertices at UV seams: compare per-corner data instead.
    mesh = trimesh.load(folder / "bird.obj", process=False)
    assert len(mesh.faces) == template.num_faces
    ours_pos = vertices.numpy()[template.faces.numpy()]             # (F, 3, 3)
    ours_uv = template.uvs.numpy()[template.face_uv_index.numpy()]  # (F, 3, 2)
    theirs_pos = mesh.vertices[mesh.faces]
    theirs_uv = mesh.visual.uv[mesh.faces]
    np.testing.assert_allclose(theirs_pos, ours_pos, atol=1e-5)
    np.testing.assert_allclose(theirs_uv, ours_uv, atol=1e-5)


def test_export_rejects_batches(tmp_path):
    template = MeshTemplate.uv_sphere()
    with pytest.raises(ValueError):
        template.export(tmp_path / "x", template.vertices[None], torch.zeros(3, 8, 8))
    with pytest.raises(ValueError):
        template.export(tmp_path / "x", template.vertices, torch.zeros(1, 3, 8, 8))
    assert list(tmp_path.iterdir()) == []
