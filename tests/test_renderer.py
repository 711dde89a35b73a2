"""Tests of meshinv.render: visibility, texturing, gradients, the soft silhouette and edge cases.

Conventions under test (meshinv/render/renderer.py): vertices in NDC (x right, y up, [-1, 1] across
the image, larger z nearer); pixel (i, j) has its centre at x = (2j + 1)/W - 1, y = 1 - (2i + 1)/H;
a pixel centre on an edge counts as covered; UVs in [0, 1] with v = 0 at the bottom texture row,
sampled as grid_sample at (2u - 1, 1 - 2v).

Scenes avoid pixel centres that lie exactly on an edge wherever the test needs an exact answer:
quad corners sit at multiples of 1/8 in NDC, while pixel centres at 32 x 32 sit at odd multiples
of 1/32.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import CUDA_DEVICE, requires_cuda
from meshinv.geometry.camera import WeakPerspectiveCamera, pixel_centers
from meshinv.geometry.template import MeshTemplate
from meshinv.render import (
    MeshRenderer, RenderSettings, covered_pixels, interpolate_corner_attributes, make_renderer, rasterize,
)
from meshinv.render.rasterizer import barycentric_planes
from meshinv.render.settings import BACKENDS

# -- helpers ---------------------------------------------------------------------------------------

QUAD_FACES = torch.tensor([[0, 1, 2], [0, 2, 3]])  # counter-clockwise in NDC


def quad(x0: float, x1: float, y0: float, y1: float, z: float, dtype=torch.float32) -> torch.Tensor:
    """(4, 3) corners of an axis-aligned rectangle at depth z, counter-clockwise from (x0, y0)."""
    return torch.tensor([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], dtype=dtype)


def quad_uvs(u0: float, u1: float, v0: float, v1: float, dtype=torch.float32) -> torch.Tensor:
    """(2, 3, 2) per-corner UVs for QUAD_FACES, mapping the quad linearly onto [u0, u1] x [v0, v1]."""
    corners = torch.tensor([[u0, v0], [u1, v0], [u1, v1], [u0, v1]], dtype=dtype)
    return corners[QUAD_FACES]


def centres(height: int, width: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W) NDC x and y of the pixel centres."""
    xy = pixel_centers(height, width, dtype=dtype)
    return xy[..., 0], xy[..., 1]


@pytest.fixture(scope="module")
def template() -> MeshTemplate:
    return MeshTemplate.uv_sphere()


def random_scene(template: MeshTemplate, seed: int, batch: int = 1, scale: float = 0.6,
                 deform: float = 0.1, dtype=torch.float32) -> torch.Tensor:
    """(B, V, 3) NDC vertices of randomly deformed, rotated, scaled and shifted templates."""
    g = torch.Generator().manual_seed(seed)
    deformation = torch.randn(batch, 3, 32, 32, generator=g) * deform
    quaternion = F.normalize(torch.randn(batch, 4, generator=g), dim=-1)
    scales = scale * (1 + 0.1 * (torch.rand(batch, 1, generator=g) - 0.5))
    translation = torch.randn(batch, 2, generator=g) * 0.05
    camera = WeakPerspectiveCamera(scales, translation, quaternion)
    with torch.no_grad():
        return camera.transform(template.vertex_positions(deformation)).to(dtype)


def random_texture(seed: int, batch: int = 1, size: int = 16, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=g).to(dtype)


def edge_distance(face_xy: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Smallest distance from any point (N, 2) to any triangle edge segment of face_xy (F, 3, 2)."""
    a = face_xy.reshape(-1, 3, 2)
    b = a.roll(-1, dims=1)
    a, b = a.reshape(-1, 2), b.reshape(-1, 2)  # (E, 2)
    edge = b - a
    rel = points[:, None, :] - a[None]  # (N, E, 2)
    t = ((rel * edge).sum(-1) / (edge * edge).sum(-1).clamp(min=1e-30)).clamp(0, 1)
    return (rel - t[..., None] * edge).norm(dim=-1).min()


# -- coverage against an independent point-in-triangle test ----------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hard_mask_matches_matplotlib_point_in_triangle(template, seed):
    from matplotlib.path import Path

    size = 256
    vertices = random_scene(template, seed, scale=0.6, deform=0.1)
    fragments = rasterize(vertices, template.faces, size)
    mask = (fragments.face_index[0] >= 0).numpy()

    tris = vertices[0, template.faces][..., :2].double().numpy()  # (F, 3, 2), the renderer's values
    strictly_inside = np.zeros((size, size), bool)  # inside some triangle by more than 1e-6
    near_or_inside = np.zeros((size, size), bool)  # inside or within 1e-6 of some triangle
    centre = (2 * np.arange(size) + 1) / size - 1
    for tri in tris:
        # Candidate pixels: the triangle's bounding box, grown by one pixel (computed independently
        # of the rasteriser's own box).
        c0 = max(int(np.floor((tri[:, 0].min() + 1) * size / 2)) - 1, 0)
        c1 = min(int(np.ceil((tri[:, 0].max() + 1) * size / 2)) + 1, size)
        r0 = max(int(np.floor((1 - tri[:, 1].max()) * size / 2)) - 1, 0)
        r1 = min(int(np.ceil((1 - tri[:, 1].min()) * size / 2)) + 1, size)
        if c0 >= c1 or r0 >= r1:
            continue
        cols, rows = np.meshgrid(np.arange(c0, c1), np.arange(r0, r1))
        points = np.stack([centre[cols.ravel()], -centre[rows.ravel()]], axis=1)  # row i: y = -centre[i]
        path = Path(np.concatenate([tri, tri[:1]]), closed=True)
        # The sign of `radius` that grows the polygon depends on its orientation: take both.
        plus = path.contains_points(points, radius=1e-6)
        minus = path.contains_points(points, radius=-1e-6)
        strictly_inside[rows.ravel(), cols.ravel()] |= plus & minus
        near_or_inside[rows.ravel(), cols.ravel()] |= plus | minus

    on_edge = near_or_inside & ~strictly_inside
    checked = ~on_edge
    mismatches = int((mask[checked] != strictly_inside[checked]).sum())
    assert mismatches == 0, f"{mismatches} pixels disagree with the point-in-triangle test"
    assert on_edge.sum() < 0.001 * size * size  # almost every pixel is decided by the test
    assert 0.1 < mask.mean() < 0.6  # a real object, not an empty or full frame


# -- occlusion -------------------------------------------------------------------------------------

def two_quads(z_a: float, z_b: float, a_first: bool = True):
    """Quad A (texture colour red, u = 0) and quad B (green, u = 1) overlapping in [-0.25, 0.25]^2."""
    a = quad(-0.75, 0.25, -0.75, 0.25, z_a)
    b = quad(-0.25, 0.75, -0.25, 0.75, z_b)
    uv_a, uv_b = quad_uvs(0, 0, 0.5, 0.5), quad_uvs(1, 1, 0.5, 0.5)
    if a_first:
        vertices, faces, uvs = torch.cat([a, b]), torch.cat([QUAD_FACES, QUAD_FACES + 4]), torch.cat([uv_a, uv_b])
        faces_a, faces_b = {0, 1}, {2, 3}
    else:
        vertices, faces, uvs = torch.cat([b, a]), torch.cat([QUAD_FACES, QUAD_FACES + 4]), torch.cat([uv_b, uv_a])
        faces_a, faces_b = {2, 3}, {0, 1}
    texture = torch.zeros(1, 3, 2, 2)
    texture[0, 0, :, 0] = 1.0  # column 0 (u = 0): red
    texture[0, 1, :, 1] = 1.0  # column 1 (u = 1): green
    return vertices[None], faces, uvs, texture, faces_a, faces_b


@pytest.mark.parametrize("a_first", [True, False])
@pytest.mark.parametrize("a_nearer", [True, False])
def test_occlusion_nearer_quad_wins(a_first, a_nearer):
    z_a, z_b = (0.7, 0.3) if a_nearer else (0.3, 0.7)
    vertices, faces, uvs, texture, faces_a, faces_b = two_quads(z_a, z_b, a_first)
    out = MeshRenderer(32)(vertices, faces, uvs, texture)
    x, y = centres(32, 32)
    in_a = (x >= -0.75) & (x <= 0.25) & (y >= -0.75) & (y <= 0.25)
    in_b = (x >= -0.25) & (x <= 0.75) & (y >= -0.25) & (y <= 0.75)
    overlap = in_a & in_b
    assert overlap.sum() == 8 * 8  # 0.5 NDC = 8 pixels each way
    shows_a = (in_a & ~in_b) | (overlap if a_nearer else torch.zeros_like(overlap))
    shows_b = (in_b & ~in_a) | (torch.zeros_like(overlap) if a_nearer else overlap)
    red, green = torch.tensor([1.0, 0, 0]), torch.tensor([0, 1.0, 0])
    image = out.image[0].permute(1, 2, 0)
    assert torch.equal(image[shows_a], red.expand(int(shows_a.sum()), 3))
    assert torch.equal(image[shows_b], green.expand(int(shows_b.sum()), 3))
    assert torch.all(image[~(in_a | in_b)] == 0)

    face_index = out.face_index[0]
    assert all(int(f) in faces_a for f in face_index[shows_a])
    assert all(int(f) in faces_b for f in face_index[shows_b])
    assert torch.all(face_index[~(in_a | in_b)] == -1)
    assert torch.equal(out.mask[0, 0] > 0, in_a | in_b)
    torch.testing.assert_close(out.depth[0][shows_a], torch.full((int(shows_a.sum()),), z_a), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.depth[0][shows_b], torch.full((int(shows_b.sum()),), z_b), atol=1e-6, rtol=0)
    assert torch.all(out.depth[0][~(in_a | in_b)] == 0)


def test_occlusion_follows_depth_within_one_mesh(template):
    """A closed sphere: every visible face is front-facing (its nearer half) at every pixel."""
    vertices = random_scene(template, 5, deform=0.0)
    out = MeshRenderer(64)(vertices, template.faces, *template.render_inputs(random_texture(0)))
    _, area2 = barycentric_planes(vertices[0, template.faces][..., :2])
    visible = out.face_index[out.face_index >= 0]
    assert torch.all(area2[visible] > 0)


# -- texturing -------------------------------------------------------------------------------------

def expected_colours(texture: torch.Tensor, u: torch.Tensor, v: torch.Tensor, align_corners: bool = True) -> torch.Tensor:
    """grid_sample of texture (1, C, Ht, Wt) at (2u - 1, 1 - 2v), u, v (H, W) -> (C, H, W)."""
    grid = torch.stack([2 * u - 1, 1 - 2 * v], dim=-1)[None].to(texture.dtype)
    return F.grid_sample(texture, grid, mode="bilinear", padding_mode="border", align_corners=align_corners)[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_full_screen_quad_samples_texture_like_grid_sample(dtype):
    height, width = 20, 28
    texture = random_texture(3, size=9, dtype=dtype)[:, :, :7]  # (1, 3, 7, 9): not square
    out = MeshRenderer((height, width))(quad(-1.5, 1.5, -1.5, 1.5, 0.0, dtype)[None], QUAD_FACES,
                                        quad_uvs(-0.25, 1.25, -0.25, 1.25, dtype), texture)
    assert out.mask.all()
    x, y = centres(height, width, dtype)
    u, v = (x + 1.5) / 3 * 1.5 - 0.25, (y + 1.5) / 3 * 1.5 - 0.25  # linear over the quad
    inside = (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
    expected = expected_colours(texture, u, v)
    torch.testing.assert_close(out.image[0][:, inside], expected[:, inside], atol=1e-5, rtol=0)


def test_partial_quad_colours_at_pixel_centres():
    texture = random_texture(4, size=12, dtype=torch.float64)
    x0, x1, y0, y1 = -0.75, 0.5, -0.5, 0.75
    u0, u1, v0, v1 = 0.2, 0.9, 0.1, 0.8
    out = MeshRenderer(32)(quad(x0, x1, y0, y1, 0.2, torch.float64)[None], QUAD_FACES,
                           quad_uvs(u0, u1, v0, v1, torch.float64), texture)
    x, y = centres(32, 32)
    inside = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    assert torch.equal(out.mask[0, 0] > 0, inside)
    u = u0 + (u1 - u0) * (x - x0) / (x1 - x0)
    v = v0 + (v1 - v0) * (y - y0) / (y1 - y0)
    expected = expected_colours(texture, u, v)
    torch.testing.assert_close(out.image[0][:, inside], expected[:, inside], atol=1e-5, rtol=0)


def test_pixel_centres_hit_texel_centres_exactly():
    """With align_corners=False and a texture of the image's size, a full-screen quad with UVs
    (0, 0) .. (1, 1) samples texel (i, j) exactly at pixel (i, j): the render is the texture."""
    texture = random_texture(6, size=16)
    renderer = MeshRenderer(16, align_corners=False)
    out = renderer(quad(-1, 1, -1, 1, 0.0)[None], QUAD_FACES, quad_uvs(0, 1, 0, 1), texture)
    torch.testing.assert_close(out.image, texture, atol=1e-5, rtol=0)


def test_texture_top_row_renders_at_image_top():
    """v = 1 is the top texture row (row 0) and must appear at the top of the image."""
    texture = torch.zeros(1, 3, 8, 8)
    texture[0, 0, :4] = 1.0  # top half red
    texture[0, 2, 4:] = 1.0  # bottom half blue
    out = MeshRenderer(32)(quad(-1.5, 1.5, -1.5, 1.5, 0.0)[None], QUAD_FACES, quad_uvs(0, 1, 0, 1), texture)
    # The quad spans 3 NDC units; the image rows show v in [1/6, 5/6] -> texture rows 1.2 .. 5.8.
    top, bottom = out.image[0, :, :4], out.image[0, :, -4:]
    # Bilinear weights summing to 1 up to float rounding: compare to 1e-6, not bit-exactly.
    torch.testing.assert_close(top[0], torch.ones_like(top[0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(top[2], torch.zeros_like(top[2]), atol=1e-6, rtol=0)
    torch.testing.assert_close(bottom[0], torch.zeros_like(bottom[0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(bottom[2], torch.ones_like(bottom[2]), atol=1e-6, rtol=0)


def test_per_image_face_uvs():
    """(B, F, 3, 2) UVs: each image uses its own."""
    texture = random_texture(7, batch=2, size=8)
    vertices = quad(-0.75, 0.75, -0.75, 0.75, 0.0)[None].expand(2, -1, -1)
    uvs = torch.stack([quad_uvs(0, 1, 0, 1), quad_uvs(1, 0, 0, 1)])  # the second mirrored in u
    out = MeshRenderer(24)(vertices, QUAD_FACES, uvs, texture)
    for b in range(2):
        single = MeshRenderer(24)(vertices[b:b + 1], QUAD_FACES, uvs[b], texture[b:b + 1])
        torch.testing.assert_close(out.image[b:b + 1], single.image, atol=1e-6, rtol=0)
    assert not torch.allclose(out.image[0], MeshRenderer(24)(vertices[:1], QUAD_FACES, uvs[1], texture[:1]).image[0])


# -- background ------------------------------------------------------------------------------------

def test_background_default_and_composited():
    texture = random_texture(8, batch=2, size=8)
    vertices = quad(-0.5, 0.5, -0.5, 0.5, 0.0)[None].expand(2, -1, -1)
    renderer = MeshRenderer((16, 24))
    plain = renderer(vertices, QUAD_FACES, quad_uvs(0, 1, 0, 1), texture)
    uncovered = plain.mask.expand(-1, 3, -1, -1) == 0
    assert uncovered.any() and (~uncovered).any()
    assert torch.all(plain.image[uncovered] == 0)

    background = torch.rand(2, 3, 16, 24, generator=torch.Generator().manual_seed(0))
    composited = renderer(vertices, QUAD_FACES, quad_uvs(0, 1, 0, 1), texture, background=background)
    assert torch.equal(composited.image[uncovered], background[uncovered])
    assert torch.equal(composited.image[~uncovered], plain.image[~uncovered])

    colour = torch.tensor([0.25, 0.5, 1.0])[:, None, None]  # (C, 1, 1)
    flat = renderer(vertices, QUAD_FACES, quad_uvs(0, 1, 0, 1), texture, background=colour)
    assert torch.equal(flat.image[uncovered], colour.expand(2, 3, 16, 24)[uncovered])
    scalar = renderer(vertices, QUAD_FACES, quad_uvs(0, 1, 0, 1), texture, background=-1.0)
    assert torch.all(scalar.image[uncovered] == -1)


# -- gradients -------------------------------------------------------------------------------------

def gradcheck_scene():
    """Float64, 16 x 16: two overlapping layers of triangles with no pixel centre near any edge."""
    g = torch.Generator().manual_seed(11)
    base = torch.tensor([
        [-0.8, -0.7, 0.2], [0.6, -0.8, 0.25], [0.7, 0.6, 0.3], [-0.7, 0.7, 0.2],  # back layer quad
        [-0.3, -0.4, 0.7], [0.5, -0.1, 0.75], [-0.1, 0.5, 0.8],  # front triangle
    ], dtype=torch.float64)
    vertices = base + 0.02 * torch.randn(base.shape, generator=g, dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6]])
    face_uvs = 0.1 + 0.8 * torch.rand(3, 3, 2, generator=g, dtype=torch.float64)
    texture = torch.rand(1, 3, 8, 8, generator=g, dtype=torch.float64)
    return vertices[None], faces, face_uvs, texture


def test_gradcheck_scene_is_away_from_coverage_changes():
    vertices, faces, face_uvs, texture = gradcheck_scene()
    x, y = centres(16, 16)
    points = torch.stack([x.flatten(), y.flatten()], dim=1)
    assert edge_distance(vertices[0, faces][..., :2], points) > 1e-4
    # Texture coordinates of covered pixels also stay away from texel lines (bilinear kinks).
    out = MeshRenderer(16)(vertices, faces, face_uvs, texture)
    assert out.mask.mean() > 0.3 and (out.face_index == 2).any()
    uv = interpolate_corner_attributes(covered_pixels(vertices, faces, out.face_index), face_uvs)
    texel = torch.stack([uv[:, 0] * 7, (1 - uv[:, 1]) * 7], dim=1)
    assert (texel - texel.round()).abs().min() > 1e-4


@pytest.mark.parametrize("wrt", ["texture", "face_uvs"])
def test_gradcheck_texture_and_uvs(wrt):
    vertices, faces, face_uvs, texture = gradcheck_scene()
    renderer = MeshRenderer(16)
    inputs = {"face_uvs": face_uvs, "texture": texture}
    checked = inputs[wrt].requires_grad_(True)

    def render(x):
        return renderer(vertices, faces, **{**inputs, wrt: x}).image

    assert torch.autograd.gradcheck(render, (checked,), eps=1e-6, atol=1e-6)


def test_gradcheck_vertices():
    vertices, faces, face_uvs, texture = gradcheck_scene()
    renderer = MeshRenderer(16)
    reference = renderer(vertices, faces, face_uvs, texture).face_index

    def render(v):
        out = renderer(v, faces, face_uvs, texture)
        assert torch.equal(out.face_index, reference)  # no coverage change under the perturbation
        return out.image, out.depth

    vertices.requires_grad_(True)
    assert torch.autograd.gradcheck(render, (vertices,), eps=1e-6, atol=1e-6)
    # And the gradient is really there: the image depends on every covered face's corners.
    image, depth = render(vertices)
    grad, = torch.autograd.grad(image.sum() + depth.sum(), vertices)
    assert torch.all(grad[0].abs().sum(-1) > 0)


def test_gradcheck_soft_silhouette():
    vertices, faces, _, _ = gradcheck_scene()
    sigma = 2e-3  # soft over ~1.5 pixels at 16 x 16
    # Pixel centres stay away from where a face enters the candidate box (a 1e-4 jump there).
    reach = math.sqrt(sigma * math.log(1e4))
    xy = vertices[0, faces][..., :2]
    bounds = torch.cat([xy.amin(1) - reach, xy.amax(1) + reach], dim=1)  # (F, 4): x0 y0 x1 y1
    x, y = centres(16, 16)
    assert (x.flatten()[:, None] - bounds[None, :, 0::2].flatten()).abs().min() > 1e-4
    assert (y.flatten()[:, None] - bounds[None, :, 1::2].flatten()).abs().min() > 1e-4
    renderer = MeshRenderer(16, sigma=sigma)
    vertices.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: renderer.soft_silhouette(v, faces), (vertices,), eps=1e-6, atol=1e-6)


# -- soft silhouette -------------------------------------------------------------------------------

def dilate(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """(B, 1, H, W) bool mask grown by `pixels` (square structuring element)."""
    return F.max_pool2d(mask.double(), 2 * pixels + 1, stride=1, padding=pixels) > 0


def test_soft_silhouette_range_inside_outside(template):
    vertices = random_scene(template, 3, scale=0.5, dtype=torch.float64).requires_grad_(True)
    renderer = MeshRenderer(64)
    hard = renderer.rasterize(vertices, template.faces).mask > 0
    soft = renderer.soft_silhouette(vertices, template.faces)
    assert soft.shape == (1, 1, 64, 64)
    assert soft.min() >= 0 and soft.max() <= 1
    assert soft[hard].min() > 1 - 1e-5
    far = ~dilate(hard, 4)  # 4 pixels = 0.125 NDC, beyond the reach sqrt(sigma ln 1e4) ~ 0.043
    assert far.sum() > 1000 and soft[far].max() < 1e-6

    ring = dilate(hard, 1) & ~hard  # pixels just outside the object: the hard render has no gradient there
    assert ring.sum() > 20
    assert soft[ring].min() > 0
    grad, = torch.autograd.grad(soft[ring].sum(), vertices)
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0
    # Only vertices of faces near the silhouette get a gradient, and some do.
    assert (grad[0].abs().sum(-1) > 0).sum() > 10


def test_soft_silhouette_grows_towards_a_moving_triangle():
    renderer = MeshRenderer(32)
    faces = torch.tensor([[0, 1, 2]])
    triangle = torch.tensor([[[-0.5, -0.5, 0.0], [0.25, -0.5, 0.0], [-0.5, 0.25, 0.0]]], dtype=torch.float64)
    # Pixel (15, 12) has its centre at (-7/32, 1/32), 0.044 NDC outside the hypotenuse x + y = -0.25.
    row, col = 15, 12
    values = []
    for shift in [0.0, 0.005, 0.01, 0.02]:
        moved = triangle + torch.tensor([shift, shift, 0.0], dtype=torch.float64)
        assert renderer.rasterize(moved, faces).face_index[0, row, col] == -1  # still outside
        values.append(float(renderer.soft_silhouette(moved, faces)[0, 0, row, col]))
    assert values[0] > 0
    assert all(a < b for a, b in zip(values, values[1:])), values
    # The gradient agrees: the derivative along the translation (1, 1) of all corners is positive.
    moving = triangle.clone().requires_grad_(True)
    grad, = torch.autograd.grad(renderer.soft_silhouette(moving, faces)[0, 0, row, col], moving)
    assert grad[0, :, :2].sum() > 0


def test_soft_silhouette_ignores_collapsed_faces():
    """A face collapsed to a point (zero area) must not make a block of pixels opaque: it acts as
    the point it is, exp(-d^2 / sigma) (d >= 1 pixel here, so < 1e-3), never 1."""
    renderer = MeshRenderer(32)
    vertices = torch.tensor([[[0.5, 0.5, 0.0], [0.875, 0.5, 0.0], [0.5, 0.875, 0.0], [0.0, 0.0, 0.0]]])
    faces = torch.tensor([[0, 1, 2], [3, 3, 3]])
    soft = renderer.soft_silhouette(vertices, faces)
    alone = renderer.soft_silhouette(vertices, faces[:1])
    near_point = torch.zeros(32, 32, dtype=torch.bool)
    near_point[12:20, 12:20] = True
    assert soft[0, 0][near_point].max() < 1e-3
    torch.testing.assert_close(soft[0, 0][~near_point], alone[0, 0][~near_point])


# -- chunking --------------------------------------------------------------------------------------

def test_chunk_size_does_not_change_the_result(template):
    vertices = random_scene(template, 4, batch=2, scale=0.8)
    faces = template.faces
    default = rasterize(vertices, faces, 64)
    chunked = rasterize(vertices, faces, 64, chunk_size=1000)
    assert torch.equal(default.face_index, chunked.face_index)
    assert torch.equal(default.depth, chunked.depth)

    weights = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    results = []
    for chunk_size in [None, 1000]:
        renderer = MeshRenderer(64) if chunk_size is None else MeshRenderer(64, chunk_size=chunk_size)
        v = vertices.clone().requires_grad_(True)
        soft = renderer.soft_silhouette(v, faces)
        grad, = torch.autograd.grad((soft * weights).sum(), v)
        results.append((soft, grad))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-6, rtol=0)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-4, rtol=1e-4)  # gradients of every chunk


def test_huge_triangle_with_tiny_chunks_covers_everything():
    vertices = torch.tensor([[[-10.0, -10.0, 0.5], [10.0, -10.0, 0.5], [0.0, 10.0, 0.5]]])
    faces = torch.tensor([[0, 1, 2]])
    fragments = rasterize(vertices, faces, 64, chunk_size=100)
    assert torch.all(fragments.face_index == 0)
    assert torch.all(fragments.depth == 0.5)
    out = MeshRenderer(64, chunk_size=100)(vertices, faces, torch.full((1, 3, 2), 0.5), torch.ones(1, 3, 4, 4))
    assert out.mask.all() and torch.all(out.image == 1)


# -- edge cases ------------------------------------------------------------------------------------

def test_off_screen_mesh_is_empty(template):
    vertices = random_scene(template, 0) + torch.tensor([3.0, 0.0, 0.0])
    out = template.render(MeshRenderer(32), vertices, random_texture(0), background=0.5)
    assert not out.mask.any()
    assert torch.all(out.face_index == -1) and torch.all(out.depth == 0)
    assert torch.all(out.image == 0.5)
    assert not MeshRenderer(32).soft_silhouette(vertices, template.faces).any()


def test_degenerate_faces_are_ignored():
    back = quad(-0.75, 0.75, -0.75, 0.75, 0.0)
    y_centre = 1 - 33 / 32  # the NDC y of pixel row 16's centre: the segment passes through centres
    segment = torch.tensor([[-0.5, y_centre, 0.9], [0.0, y_centre, 0.9], [0.5, y_centre, 0.9]])
    point = torch.tensor([[1 / 32, 1 / 32, 0.9]]).expand(3, -1)  # collapsed onto pixel (15, 16)'s centre
    vertices = torch.cat([back, segment, point])[None]
    faces = torch.cat([QUAD_FACES, torch.tensor([[4, 5, 6], [7, 8, 9], [7, 7, 7]])])
    texture = random_texture(1, size=8)
    uvs = torch.cat([quad_uvs(0, 1, 0, 1), torch.full((3, 3, 2), 0.5)])
    out = MeshRenderer(32)(vertices, faces, uvs, texture)
    alone = MeshRenderer(32)(vertices, faces[:2], uvs[:2], texture)
    assert torch.equal(out.face_index, alone.face_index)
    assert torch.equal(out.image, alone.image)
    vertices.requires_grad_(True)
    out = MeshRenderer(32)(vertices, faces, uvs, texture)
    grad, = torch.autograd.grad(out.image.sum() + out.depth.sum(), vertices)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_vertices_do_not_cover_pixels(bad):
    back = quad(-0.75, 0.75, -0.75, 0.75, 0.0)
    front = torch.tensor([[-0.5, -0.5, 0.9], [0.5, -0.5, 0.9], [bad, bad, bad]])
    vertices = torch.cat([back, front])[None]
    faces = torch.cat([QUAD_FACES, torch.tensor([[4, 5, 6]])])
    texture = random_texture(2, size=8)
    uvs = torch.cat([quad_uvs(0, 1, 0, 1), torch.full((1, 3, 2), 0.5)])
    out = MeshRenderer(32)(vertices, faces, uvs, texture)
    alone = MeshRenderer(32)(vertices, faces[:2], uvs[:2], texture)
    assert torch.equal(out.face_index, alone.face_index)
    assert torch.equal(out.image, alone.image)
    assert torch.isfinite(out.image).all() and torch.isfinite(out.depth).all()
    soft = MeshRenderer(32).soft_silhouette(vertices, faces)
    assert torch.isfinite(soft).all()


def test_non_square_image():
    height, width = 24, 40
    renderer = MeshRenderer((height, width))
    left = quad(-1.5, 0.0, -1.5, 1.5, 0.0)[None]  # x = 0 lies between columns 19 and 20
    out = renderer(left, QUAD_FACES, quad_uvs(0, 1, 0, 1), random_texture(0, size=8))
    assert out.image.shape == (1, 3, height, width)
    assert out.mask.shape == (1, 1, height, width)
    assert out.face_index.shape == (1, height, width) and out.depth.shape == (1, height, width)
    covered = out.mask[0, 0] > 0
    assert torch.all(covered[:, : width // 2]) and not covered[:, width // 2:].any()

    top = quad(-1.5, 1.5, 0.0, 1.5, 0.0)[None]
    covered = renderer(top, QUAD_FACES, quad_uvs(0, 1, 0, 1), random_texture(0, size=8)).mask[0, 0] > 0
    assert torch.all(covered[: height // 2]) and not covered[height // 2:].any()
    soft = renderer.soft_silhouette(top, QUAD_FACES)
    assert soft.shape == (1, 1, height, width)


def test_float32_and_float64_agree(template):
    vertices = random_scene(template, 6)
    texture = random_texture(6)
    renderer = MeshRenderer(64)
    single = template.render(renderer, vertices, texture)
    double = template.render(renderer, vertices.double(), texture.double())
    assert single.image.dtype == torch.float32 and double.image.dtype == torch.float64
    assert double.depth.dtype == torch.float64 and double.mask.dtype == torch.float64
    assert torch.equal(single.face_index, double.face_index)
    # float32 barycentrics (computed relative to each face's first corner) carry ~1e-6 error, more
    # on thin faces (1/area amplifies it); a noisy texture turns that into colour differences of a
    # few 1e-4 (an 8-bit step is 8e-3 in [-1, 1]).
    torch.testing.assert_close(single.image.double(), double.image, atol=1e-3, rtol=0)
    torch.testing.assert_close(single.depth.double(), double.depth, atol=1e-5, rtol=0)


def test_cull_backfaces_removes_clockwise_faces():
    ccw = torch.tensor([[-0.75, -0.75, 0.0], [-0.125, -0.75, 0.0], [-0.75, -0.125, 0.0]])
    cw = torch.tensor([[0.125, 0.125, 0.0], [0.125, 0.75, 0.0], [0.75, 0.125, 0.0]])
    vertices = torch.cat([ccw, cw])[None]
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    both = rasterize(vertices, faces, 32).face_index
    culled = rasterize(vertices, faces, 32, cull_backfaces=True).face_index
    assert (both == 0).any() and (both == 1).any()
    assert torch.equal(culled == 0, both == 0)
    assert not (culled == 1).any()
    renderer = MeshRenderer(32, cull_backfaces=True)
    assert torch.equal(renderer.rasterize(vertices, faces).face_index, culled)


# -- batches and devices ---------------------------------------------------------------------------

def test_batch_equals_single_renders(template):
    vertices = random_scene(template, 9, batch=3)
    texture = random_texture(9, batch=3)
    renderer = MeshRenderer((48, 40))
    batched = template.render(renderer, vertices, texture)
    for b in range(3):
        single = template.render(renderer, vertices[b:b + 1], texture[b:b + 1])
        assert torch.equal(batched.face_index[b:b + 1], single.face_index)
        assert torch.equal(batched.depth[b:b + 1], single.depth)
        torch.testing.assert_close(batched.image[b:b + 1], single.image, atol=1e-6, rtol=0)
    assert not torch.equal(batched.face_index[0], batched.face_index[1])
    soft = renderer.soft_silhouette(vertices, template.faces)
    for b in range(3):
        torch.testing.assert_close(soft[b:b + 1], renderer.soft_silhouette(vertices[b:b + 1], template.faces))


@requires_cuda
def test_cpu_and_cuda_agree(template):
    # float64: a pixel centre that lies within float32 rounding of an edge could go either way
    vertices = random_scene(template, 10, batch=2).double()
    texture = random_texture(10, batch=2).double()
    renderer = MeshRenderer(128)
    cpu = template.render(renderer, vertices, texture)
    cuda_template = MeshTemplate.uv_sphere().to(CUDA_DEVICE)
    gpu = cuda_template.render(renderer, vertices.to(CUDA_DEVICE), texture.to(CUDA_DEVICE))
    assert torch.equal(cpu.face_index, gpu.face_index.cpu())
    torch.testing.assert_close(cpu.image, gpu.image.cpu(), atol=1e-5, rtol=0)
    torch.testing.assert_close(cpu.depth, gpu.depth.cpu(), atol=1e-5, rtol=0)
    torch.testing.assert_close(renderer.soft_silhouette(vertices, template.faces),
                               renderer.soft_silhouette(vertices.to(CUDA_DEVICE), cuda_template.faces).cpu(), atol=1e-5, rtol=0)


def test_mixed_dtypes_are_a_clear_error():
    vertices = quad(-0.5, 0.5, -0.5, 0.5, 0.0, torch.float64)[None]
    texture = random_texture(0, size=8)  # float32
    with pytest.raises(TypeError, match="float32.*float64"):
        MeshRenderer(16)(vertices, QUAD_FACES, quad_uvs(0, 1, 0, 1, torch.float64), texture)


# -- render settings: the one way to make a renderer -----------------------------------------------

def test_render_settings_build_the_renderer_they_describe(template):
    vertices, texture = random_scene(template, 11), random_texture(11)
    settings = RenderSettings((40, 48), cull_backfaces=True, chunk_size=500, align_corners=False, sigma=1e-3)
    built = make_renderer(settings)
    direct = MeshRenderer((40, 48), align_corners=False, cull_backfaces=True, sigma=1e-3, chunk_size=500)
    assert (built.image_size, built.cull_backfaces, built.chunk_size, built.align_corners, built.sigma) == \
        ((40, 48), True, 500, False, 1e-3)
    ours, theirs = template.render(built, vertices, texture), template.render(direct, vertices, texture)
    assert torch.equal(ours.face_index, theirs.face_index) and torch.equal(ours.image, theirs.image)
    # A bare size is the default settings at that size.
    assert make_renderer(24).extra_repr() == make_renderer(RenderSettings(24)).extra_repr() == \
        MeshRenderer(24).extra_repr()


def test_a_second_backend_is_one_registered_class(monkeypatch):
    class Recording:
        def __init__(self, settings):
            self.settings, self.image_size = settings, settings.image_size

    monkeypatch.setitem(BACKENDS, "other", Recording)
    settings = RenderSettings(32, backend="other", cull_backfaces=True)
    renderer = make_renderer(settings)
    assert isinstance(renderer, Recording) and renderer.settings == settings
    with pytest.raises(ValueError, match="unknown render backend 'missing'; known: torch, other"):
        make_renderer(RenderSettings(32, backend="missing"))


def test_render_settings_are_a_checked_config_section():
    from meshinv.utils.config import ConfigError, from_dict, validate_config

    settings = from_dict(RenderSettings, {"image_size": [48, 40], "cull_backfaces": True})
    validate_config(settings, "render")
    assert settings == RenderSettings((48, 40), cull_backfaces=True)
    with pytest.raises(ConfigError, match="render.backend must be one of 'torch', got 'nvdiffrast'"):
        from_dict(RenderSettings, {"image_size": 32, "backend": "nvdiffrast"}, "render")
    with pytest.raises(ConfigError, match=r"render.image_size\[1\] must be >= 1, got 0"):
        validate_config(RenderSettings((32, 0)), "render")
    with pytest.raises(ConfigError, match="chunk_size must be >= 1, got 0"):
        make_renderer(RenderSettings(32, chunk_size=0))


def test_config_sections_produce_the_render_settings_of_their_size():
    from meshinv.config import SampleConfig
    from meshinv.data.preprocess import CropConfig
    from meshinv.inversion.config import ExportConfig, InversionAlgorithm
    from meshinv.training.config import PretrainConfig

    assert PretrainConfig(render_size=48).render_settings == RenderSettings(48)
    assert SampleConfig(image_size=40).render_settings == RenderSettings(40)
    assert ExportConfig(turntable_size=20).turntable_render_settings == RenderSettings(20)
    assert InversionAlgorithm(crop=CropConfig(img_size=36)).render_settings == RenderSettings(36)
