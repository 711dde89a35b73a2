"""Rotations against scipy, the weak-perspective camera (docs/method.md section 2) and pixel centres."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from meshinv.geometry import (
    WeakPerspectiveCamera, euler_to_matrix, matrix_to_euler, matrix_to_quaternion, normalize_quaternion,
    pixel_centers, quaternion_multiply, quaternion_rotate, quaternion_to_matrix, rotation_about_y,
)

RNG_SEED = 1234


def random_rotations(n: int, seed: int = RNG_SEED) -> Rotation:
    return Rotation.random(n, random_state=seed)


def wxyz(rot: Rotation) -> np.ndarray:
    """scipy quaternions are scalar-last (x, y, z, w); ours are (w, x, y, z)."""
    q = rot.as_quat()
    return np.concatenate([q[:, 3:], q[:, :3]], axis=1)


# -- quaternions -------------------------------------------------------------------------------------------

def test_quaternion_to_matrix_matches_scipy():
    rot = random_rotations(200)
    ours = quaternion_to_matrix(torch.from_numpy(wxyz(rot)))
    assert ours.dtype == torch.float64 and ours.shape == (200, 3, 3)
    np.testing.assert_allclose(ours.numpy(), rot.as_matrix(), atol=1e-10)


def test_quaternion_to_matrix_normalises():
    rot = random_rotations(50)
    scale = np.random.default_rng(0).uniform(0.1, 10.0, size=(50, 1))
    q = torch.from_numpy(wxyz(rot) * scale)
    np.testing.assert_allclose(quaternion_to_matrix(q).numpy(), rot.as_matrix(), atol=1e-10)
    # q and -q are the same rotation.
    np.testing.assert_allclose(quaternion_to_matrix(-q).numpy(), rot.as_matrix(), atol=1e-10)
    np.testing.assert_allclose(normalize_quaternion(q).norm(dim=-1).numpy(), 1.0, atol=1e-12)


def test_quaternion_to_matrix_keeps_batch_shape():
    q = torch.from_numpy(wxyz(random_rotations(6))).reshape(2, 3, 4)
    assert quaternion_to_matrix(q).shape == (2, 3, 3, 3)


def test_matrix_to_quaternion_matches_scipy():
    rot = random_rotations(200)
    # Include the hard cases: identity and 180-degree turns (w = 0), where some formulas divide by ~0.
    special = Rotation.from_rotvec(np.array([[0, 0, 0], [np.pi, 0, 0], [0, np.pi, 0], [0, 0, np.pi],
                                             [np.pi / np.sqrt(2), np.pi / np.sqrt(2), 0]]))
    rot = Rotation.concatenate([rot, special])
    q = matrix_to_quaternion(torch.from_numpy(rot.as_matrix()))
    assert q.dtype == torch.float64 and q.shape == (205, 4)
    expected = wxyz(rot)
    expected *= np.where(expected[:, :1] < 0, -1.0, 1.0)  # our sign convention: w >= 0
    np.testing.assert_allclose(q.numpy()[:200], expected[:200], atol=1e-10)
    assert (q[:, 0] >= 0).all()
    # At w = 0 the sign is ambiguous: compare as rotations.
    np.testing.assert_allclose(quaternion_to_matrix(q).numpy(), rot.as_matrix(), atol=1e-10)
    np.testing.assert_allclose(np.abs((q.numpy() * expected).sum(axis=1)), 1.0, atol=1e-10)


def test_matrix_to_quaternion_keeps_batch_shape():
    R = torch.from_numpy(random_rotations(6).as_matrix()).reshape(3, 2, 3, 3)
    assert matrix_to_quaternion(R).shape == (3, 2, 4)


def test_quaternion_multiply_composes_rotations():
    a, b = random_rotations(30, seed=1), random_rotations(30, seed=2)
    qa, qb = torch.from_numpy(wxyz(a)), torch.from_numpy(wxyz(b))
    product = quaternion_multiply(qa, qb)
    # Rotate by b, then by a: R(a * b) = R(a) R(b).
    np.testing.assert_allclose(quaternion_to_matrix(product).numpy(), (a * b).as_matrix(), atol=1e-10)
    np.testing.assert_allclose(
        quaternion_to_matrix(product).numpy(),
        (quaternion_to_matrix(qa) @ quaternion_to_matrix(qb)).numpy(), atol=1e-10,
    )
    # Identity quaternion is neutral; q * conj(q) = identity.
    identity = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64).expand(30, 4)
    torch.testing.assert_close(quaternion_multiply(identity, qa), qa)
    conj = qa * torch.tensor([1.0, -1.0, -1.0, -1.0], dtype=torch.float64)
    torch.testing.assert_close(quaternion_multiply(qa, conj), identity)


def test_quaternion_rotate():
    rot = random_rotations(4)
    points = np.random.default_rng(3).normal(size=(4, 10, 3))
    out = quaternion_rotate(torch.from_numpy(wxyz(rot) * 3.0), torch.from_numpy(points))
    expected = np.stack([rot[i].apply(points[i]) for i in range(4)])
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-10)


# -- Euler angles ------------------------------------------------------------------------------------------

SEQUENCES = ["xyz", "zyx", "yxz", "zxy", "XYZ", "ZYX", "YZX", "XZY"]


@pytest.mark.parametrize("sequence", SEQUENCES)
@pytest.mark.parametrize("degrees", [False, True])
def test_euler_to_matrix_matches_scipy(sequence, degrees):
    rng = np.random.default_rng(5)
    angles = rng.uniform(-np.pi, np.pi, size=(40, 3))
    if degrees:
        angles = np.rad2deg(angles)
    ours = euler_to_matrix(torch.from_numpy(angles), sequence, degrees=degrees)
    expected = Rotation.from_euler(sequence, angles, degrees=degrees).as_matrix()
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-10)


@pytest.mark.parametrize("sequence", SEQUENCES)
@pytest.mark.parametrize("degrees", [False, True])
def test_matrix_to_euler_matches_scipy(sequence, degrees):
    rot = random_rotations(100, seed=7)
    expected = rot.as_euler(sequence, degrees=degrees)
    # Stay away from gimbal lock, where the split between first and third angle is arbitrary.
    limit = 85.0 if degrees else np.deg2rad(85.0)
    keep = np.abs(expected[:, 1]) < limit
    assert keep.sum() > 50
    ours = matrix_to_euler(torch.from_numpy(rot.as_matrix()), sequence, degrees=degrees)
    np.testing.assert_allclose(ours.numpy()[keep], expected[keep], atol=1e-8)
    # Round trip through euler_to_matrix everywhere.
    back = euler_to_matrix(ours, sequence, degrees=degrees)
    np.testing.assert_allclose(back.numpy(), rot.as_matrix(), atol=1e-8)


def test_euler_rejects_bad_sequences():
    angles = torch.zeros(3)
    for bad in ["xy", "xYz", "abc", "xyzx"]:
        with pytest.raises(ValueError):
            euler_to_matrix(angles, bad)
    with pytest.raises(ValueError):
        matrix_to_euler(torch.eye(3), "xyx")  # proper Euler sequences are not supported


def test_evaluation_canonical_rotation():
    # docs/method.md section 8: Euler xyz (0, -90, 60) degrees in scipy's convention, then turntable views about y.
    angles = torch.tensor([0.0, -90.0, 60.0], dtype=torch.float64)
    expected = Rotation.from_euler("xyz", [0.0, -90.0, 60.0], degrees=True).as_matrix()
    np.testing.assert_allclose(euler_to_matrix(angles, "xyz", degrees=True).numpy(), expected, atol=1e-12)
    az = torch.tensor([0.0, 30.0, 90.0, 270.0], dtype=torch.float64)
    np.testing.assert_allclose(
        rotation_about_y(az, degrees=True).numpy(),
        Rotation.from_euler("y", az.numpy()[:, None], degrees=True).as_matrix(), atol=1e-12,
    )


# -- the camera --------------------------------------------------------------------------------------------

def random_cameras(n: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.3, 1.5, size=(n, 1))
    trans = rng.uniform(-0.5, 0.5, size=(n, 2))
    quat = wxyz(random_rotations(n, seed=seed + 100)) * rng.uniform(0.5, 2.0, size=(n, 1))  # not unit
    return torch.from_numpy(np.concatenate([scale, trans, quat], axis=1))


def spec_transform(camera: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """docs/method.md section 2 with scipy: (R(q) (s v) + (tx, ty, 0)) * (1, -1, -1), per camera."""
    out = []
    for cam, v in zip(camera, vertices):
        s, tx, ty, qw, qx, qy, qz = cam
        R = Rotation.from_quat([qx, qy, qz, qw])  # scipy normalises too
        out.append((R.apply(s * v) + np.array([tx, ty, 0.0])) * np.array([1.0, -1.0, -1.0]))
    return np.stack(out)


def test_transform_matches_spec():
    cams = random_cameras(5)
    verts = torch.from_numpy(np.random.default_rng(1).normal(size=(5, 50, 3)))
    camera = WeakPerspectiveCamera.from_tensor(cams)
    out = camera.transform(verts)
    np.testing.assert_allclose(out.numpy(), spec_transform(cams.numpy(), verts.numpy()), atol=1e-10)
    np.testing.assert_allclose(camera.project(verts).numpy(), out[..., :2].numpy(), atol=0)


def test_identity_camera():
    s, tx, ty = 0.7, 0.1, -0.2
    camera = WeakPerspectiveCamera.from_tensor(torch.tensor([[s, tx, ty, 1.0, 0.0, 0.0, 0.0]]))
    v = torch.tensor([[[0.3, -0.4, 0.5], [1.0, 2.0, 3.0]]])
    x, y, z = v.unbind(-1)
    expected = torch.stack([s * x + tx, -(s * y + ty), -s * z], dim=-1)
    torch.testing.assert_close(camera.transform(v), expected)


def test_tensor_round_trip_and_validation():
    cams = random_cameras(3).float()
    camera = WeakPerspectiveCamera.from_tensor(cams)
    assert camera.batch_size == 3
    assert camera.scale.shape == (3, 1) and camera.translation.shape == (3, 2) and camera.quaternion.shape == (3, 4)
    assert torch.equal(camera.to_tensor(), cams)
    for bad in [torch.zeros(7), torch.zeros(2, 6), torch.zeros(2, 8), torch.zeros(1, 2, 7)]:
        with pytest.raises(ValueError):
            WeakPerspectiveCamera.from_tensor(bad)


def test_rotation_matrix_is_normalised():
    cams = random_cameras(4)
    R = WeakPerspectiveCamera.from_tensor(cams).rotation_matrix()
    eye = torch.eye(3, dtype=torch.float64).expand(4, 3, 3)
    torch.testing.assert_close(R @ R.transpose(1, 2), eye)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(4, dtype=torch.float64))


def test_novel_view_centres_the_mesh():
    cams = random_cameras(2)
    verts = torch.from_numpy(np.random.default_rng(2).normal(size=(2, 40, 3))) + torch.tensor([3.0, -2.0, 1.0], dtype=torch.float64)
    camera = WeakPerspectiveCamera.from_tensor(cams)
    out = camera.transform(verts, center=True, translate=False)
    # A linear map of centred vertices: the result is centred too, translation ignored.
    torch.testing.assert_close(out.mean(dim=1), torch.zeros(2, 3, dtype=torch.float64))
    centred = verts - verts.mean(dim=1, keepdim=True)
    no_translation = cams.clone()
    no_translation[:, 1:3] = 0
    np.testing.assert_allclose(out.numpy(), spec_transform(no_translation.numpy(), centred.numpy()), atol=1e-10)
    # Centering alone keeps the translation.
    shifted = camera.transform(verts, center=True)
    torch.testing.assert_close(shifted.mean(dim=1)[:, :2], cams[:, 1:3] * torch.tensor([1.0, -1.0], dtype=torch.float64))


def test_mirrored_camera():
    cams = random_cameras(4, seed=3)
    camera = WeakPerspectiveCamera.from_tensor(cams)
    mirror = torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    verts = torch.from_numpy(np.random.default_rng(4).normal(size=(4, 30, 3)))
    # The mirrored camera sees the x-mirrored object exactly as the x-flipped original view.
    torch.testing.assert_close(camera.mirrored().transform(verts * mirror), camera.transform(verts) * mirror)
    # R' = diag(-1, 1, 1) R diag(-1, 1, 1).
    D = torch.diag(mirror)
    torch.testing.assert_close(camera.mirrored().rotation_matrix(), D @ camera.rotation_matrix() @ D)
    # Mirroring twice is the identity.
    assert torch.equal(camera.mirrored().mirrored().to_tensor(), camera.to_tensor())
    # For a mirror-symmetric point set, the mirrored camera's projection is the mirror image.
    half = verts[:, :15]
    symmetric = torch.cat([half, half * mirror], dim=1)
    flipped = camera.project(symmetric) * torch.tensor([-1.0, 1.0], dtype=torch.float64)
    mirrored_view = camera.mirrored().project(symmetric)
    # Same point set, with the two halves swapped.
    torch.testing.assert_close(mirrored_view, torch.cat([flipped[:, 15:], flipped[:, :15]], dim=1))


# -- pixel centres -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("height,width", [(4, 6), (5, 3), (1, 1)])
def test_pixel_centers(height, width):
    centers = pixel_centers(height, width)
    assert centers.shape == (height, width, 2)
    for i in (0, height - 1):
        for j in (0, width - 1):
            expected = torch.tensor([(2 * j + 1) / width - 1, 1 - (2 * i + 1) / height])
            torch.testing.assert_close(centers[i, j], expected)
    # x depends on the column only, y on the row only; symmetric about 0.
    assert torch.equal(centers[..., 0], centers[:1, :, 0].expand(height, width))
    assert torch.equal(centers[..., 1], centers[:, :1, 1].expand(height, width))
    torch.testing.assert_close(centers[..., 0].mean(), torch.tensor(0.0))
    torch.testing.assert_close(centers[..., 1].mean(), torch.tensor(0.0))
    assert centers.abs().max() < 1


def test_pixel_centers_dtype():
    assert pixel_centers(2, 3, dtype=torch.float64).dtype == torch.float64
