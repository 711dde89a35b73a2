"""Weak-perspective camera, rotations, and the one pixel-centre convention.

Camera (the CMR / MeshInversion convention, 7 numbers per image): scale s, translation (tx, ty),
unit quaternion q = (w, x, y, z). Object -> image:

    v_cam = R(q) (s v) + (tx, ty, 0)          (x right, y down: image-like coordinates)
    v_ndc = v_cam * (1, -1, -1)               (the original's flip before rendering)

so v_ndc has x to the right and y upwards, each spanning [-1, 1] across the image, and larger z is
nearer to the viewer: exactly what meshinv.render.MeshRenderer takes. Quaternions are normalised
where they are used (the original fed raw optimised quaternions to its rotation formula, which is
a rotation only for unit q).

Pixel (row i, column j) of an H x W image has its centre at x = (2j + 1)/W - 1, y = 1 - (2i + 1)/H.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Flip from the camera's image-like frame (y down, z away) to NDC (y up, z towards the viewer).
NDC_FLIP = (1.0, -1.0, -1.0)


def pixel_centers(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(H, W, 2) NDC (x, y) of every pixel centre."""
    x = (2 * torch.arange(width, device=device, dtype=dtype) + 1) / width - 1
    y = 1 - (2 * torch.arange(height, device=device, dtype=dtype) + 1) / height
    return torch.stack(torch.meshgrid(x, y, indexing="xy"), dim=-1)


# -- quaternions and rotation matrices -------------------------------------------------------------

def normalize_quaternion(q: torch.Tensor) -> torch.Tensor:
    return F.normalize(q, dim=-1)


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternions (w, x, y, z), normalised first, -> (..., 3, 3) rotation matrices."""
    w, x, y, z = normalize_quaternion(q).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(q.shape[:-1] + (3, 3))


def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions (w, x, y, z) with w >= 0.

    Picks, per matrix, the numerically best of the four standard formulas (largest denominator).
    """
    m = R.reshape(-1, 3, 3)
    m00, m11, m22 = m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]
    # Four candidates, each 4 * (w, x, y, z) * (the component it divides by).
    candidates = torch.stack([
        torch.stack([1 + m00 + m11 + m22, m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]], -1),
        torch.stack([m[:, 2, 1] - m[:, 1, 2], 1 + m00 - m11 - m22, m[:, 0, 1] + m[:, 1, 0], m[:, 0, 2] + m[:, 2, 0]], -1),
        torch.stack([m[:, 0, 2] - m[:, 2, 0], m[:, 0, 1] + m[:, 1, 0], 1 - m00 + m11 - m22, m[:, 1, 2] + m[:, 2, 1]], -1),
        torch.stack([m[:, 1, 0] - m[:, 0, 1], m[:, 0, 2] + m[:, 2, 0], m[:, 1, 2] + m[:, 2, 1], 1 - m00 - m11 + m22], -1),
    ], dim=1)  # (N, 4 candidates, 4)
    diag = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    best = diag.argmax(dim=-1)
    q = candidates[torch.arange(m.shape[0], device=R.device), best]
    q = F.normalize(q, dim=-1)
    q = torch.where(q[:, :1] < 0, -q, q)
    return q.reshape(R.shape[:-2] + (4,))


def quaternion_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product a * b of (..., 4) quaternions (w, x, y, z): rotate by b, then by a."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], dim=-1)


def quaternion_rotate(q: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Rotate (B, N, 3) points by (B, 4) quaternions (normalised first)."""
    return points @ quaternion_to_matrix(q).transpose(-1, -2)


def rotation_angle_deg(q: torch.Tensor, q_ref: torch.Tensor) -> torch.Tensor:
    """(...) geodesic angle in degrees, in [0, 180], between the rotations of (..., 4) quaternions
    (w, x, y, z), each normalised first; q and -q are the same rotation.

    Computed in float64 as 4 atan2(|a - b|, |a + b|) with b = +-q_ref on a's side (a . b >= 0): for
    unit quaternions 4D-apart by phi this is 2 phi, the rotation angle, and unlike 2 acos(a . b) it
    keeps full precision near 0 and 180 degrees. Returned in q's dtype.
    """
    a, b = normalize_quaternion(q.double()), normalize_quaternion(q_ref.double())
    b = torch.where((a * b).sum(-1, keepdim=True) < 0, -b, b)
    return torch.rad2deg(4 * torch.atan2((a - b).norm(dim=-1), (a + b).norm(dim=-1))).to(q.dtype)


_AXES = {"x": 0, "y": 1, "z": 2}


def _axis_rotation(axis: str, angle: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    if axis == "x":
        rows = [one, zero, zero, zero, c, -s, zero, s, c]
    elif axis == "y":
        rows = [c, zero, s, zero, one, zero, -s, zero, c]
    else:
        rows = [c, -s, zero, s, c, zero, zero, zero, one]
    return torch.stack(rows, dim=-1).reshape(angle.shape + (3, 3))


def euler_to_matrix(angles: torch.Tensor, sequence: str = "xyz", degrees: bool = False) -> torch.Tensor:
    """(..., 3) Euler angles -> (..., 3, 3), with scipy.spatial.transform.Rotation.from_euler's
    meaning: lower-case `sequence` = extrinsic rotations (about the fixed axes, first letter
    first), upper-case = intrinsic (about the rotating axes)."""
    if len(sequence) != 3 or sequence.lower().strip("xyz") or not (sequence.islower() or sequence.isupper()):
        raise ValueError(f"Euler sequence must be three of x, y, z, all lower or all upper case, got {sequence!r}")
    if degrees:
        angles = torch.deg2rad(angles)
    mats = [_axis_rotation(axis.lower(), angles[..., k]) for k, axis in enumerate(sequence)]
    if sequence.islower():  # extrinsic: R = R3 R2 R1
        return mats[2] @ mats[1] @ mats[0]
    return mats[0] @ mats[1] @ mats[2]  # intrinsic: R = R1 R2 R3


def matrix_to_euler(R: torch.Tensor, sequence: str = "xyz", degrees: bool = False) -> torch.Tensor:
    """Inverse of euler_to_matrix for Tait-Bryan sequences (three different axes).

    Angles: first and third in (-pi, pi], second in [-pi/2, pi/2] (away from gimbal lock, the same
    angles as scipy's as_euler).
    """
    if len(set(sequence.lower())) != 3:
        raise ValueError(f"only Tait-Bryan sequences (three different axes) are supported, got {sequence!r}")
    if sequence.isupper():  # intrinsic ABC == extrinsic cba
        angles = matrix_to_euler(R, sequence.lower()[::-1])
        angles = angles.flip(-1)
    else:
        i, j, k = (_AXES[a] for a in sequence)
        # For extrinsic i, j, k: R = Rk(c) Rj(b) Ri(a); parity of the permutation sets the signs.
        sign = 1.0 if (j - i) % 3 == 1 else -1.0
        b = torch.asin((-sign * R[..., k, i]).clamp(-1.0, 1.0))
        a = torch.atan2(sign * R[..., k, j], R[..., k, k])
        c = torch.atan2(sign * R[..., j, i], R[..., i, i])
        angles = torch.stack([a, b, c], dim=-1)
    return torch.rad2deg(angles) if degrees else angles


def rotation_about_y(angle: torch.Tensor, degrees: bool = False) -> torch.Tensor:
    """(..., 3, 3) rotations about the y axis (the sphere's polar axis): turntable views."""
    if degrees:
        angle = torch.deg2rad(angle)
    return _axis_rotation("y", angle)


# -- the camera --------------------------------------------------------------------------------------

@dataclass
class WeakPerspectiveCamera:
    """A batch of weak-perspective cameras: scale (B, 1), translation (B, 2), quaternion (B, 4)."""

    scale: torch.Tensor
    translation: torch.Tensor
    quaternion: torch.Tensor

    @classmethod
    def from_tensor(cls, camera: torch.Tensor) -> "WeakPerspectiveCamera":
        """From (B, 7) = [s, tx, ty, qw, qx, qy, qz] (the original's `pred_cam` / sfm_pose order)."""
        if camera.dim() != 2 or camera.shape[1] != 7:
            raise ValueError(f"expected a (B, 7) camera tensor [s, tx, ty, qw, qx, qy, qz], got {tuple(camera.shape)}")
        return cls(camera[:, :1], camera[:, 1:3], camera[:, 3:7])

    def to_tensor(self) -> torch.Tensor:
        return torch.cat([self.scale, self.translation, self.quaternion], dim=1)

    @property
    def batch_size(self) -> int:
        return self.scale.shape[0]

    def rotation_matrix(self) -> torch.Tensor:
        return quaternion_to_matrix(self.quaternion)

    def transform(self, vertices: torch.Tensor, center: bool = False, translate: bool = True) -> torch.Tensor:
        """Object-space (B, V, 3) -> NDC (B, V, 3), ready for the renderer.

        center=True subtracts the vertices' mean first; translate=False skips (tx, ty): together
        they give the novel-view protocol of the evaluation.
        """
        if center:
            vertices = vertices - vertices.mean(dim=1, keepdim=True)
        v = (self.scale[:, :, None] * vertices) @ self.rotation_matrix().transpose(1, 2)
        if translate:
            v = v + F.pad(self.translation, (0, 1))[:, None, :]
        return v * v.new_tensor(NDC_FLIP)

    def project(self, vertices: torch.Tensor) -> torch.Tensor:
        """Object-space (B, V, 3) -> NDC image positions (B, V, 2)."""
        return self.transform(vertices)[..., :2]

    def mirrored(self) -> "WeakPerspectiveCamera":
        """The camera of the horizontally mirrored image of a mirror-symmetric object:
        R' = diag(-1, 1, 1) R diag(-1, 1, 1) (q -> (w, x, -y, -z)) and tx' = -tx (in [-1, 1])."""
        flip_q = self.quaternion.new_tensor([1.0, 1.0, -1.0, -1.0])
        flip_t = self.translation.new_tensor([-1.0, 1.0])
        return WeakPerspectiveCamera(self.scale, self.translation * flip_t, self.quaternion * flip_q)


def average_cameras(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The mean of two (B, 7) cameras: scale and translation averaged, the quaternions averaged on
    the same hemisphere (q and -q are one rotation) and normalised (the rotation halfway between)."""
    qa, qb = normalize_quaternion(a[:, 3:]), normalize_quaternion(b[:, 3:])
    qb = torch.where((qa * qb).sum(-1, keepdim=True) < 0, -qb, qb)
    return torch.cat([(a[:, :3] + b[:, :3]) / 2, normalize_quaternion(qa + qb)], dim=1)


# Canonical pose of the evaluation's novel views: Euler xyz (0, -90, 90 - 30) degrees (scipy
# convention), i.e. the original's default_orientation = 30.
CANONICAL_EULER_XYZ_DEG = (0.0, -90.0, 60.0)


def turntable_quaternions(azimuths_deg, canonical_euler_xyz_deg=CANONICAL_EULER_XYZ_DEG,
                          dtype=torch.float32, device=None) -> torch.Tensor:
    """(N, 4) quaternions q = q_y(azimuth) * q_canonical: the canonical pose turned about the
    vertical axis by each azimuth (the original's FID_12 / FID_10 novel views)."""
    azimuths = torch.as_tensor(azimuths_deg, dtype=torch.float64).reshape(-1)
    canonical = euler_to_matrix(torch.tensor(canonical_euler_xyz_deg, dtype=torch.float64), "xyz", degrees=True)
    rotations = rotation_about_y(azimuths, degrees=True) @ canonical
    return matrix_to_quaternion(rotations).to(dtype=dtype, device=device)
