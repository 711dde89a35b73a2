"""Procedural "bird-like" objects that the generator's mesh head can represent exactly.

Every object is the 16-ring UV-sphere template (docs/method.md section 1) moved by a mirror-symmetric
(3, 32, 32) deformation map, with a mirror-symmetric texture: exactly the two maps the generator
predicts. Classes ("species") differ in shape proportions and texture pattern; instances of a
class jitter both.

Orientation (object space of the template):
  * x is lateral: the mirror plane x = 0 is the bird's sagittal plane;
  * the bird's body axis is the template's polar axis: the beak tip is the south pole (forward =
    -y) and the tail tip is the north pole (+y); the bird's back faces +z, its belly -z.
  This is the frame in which the evaluation's canonical novel view (Euler xyz (0, -90, 60) deg,
  docs/method.md section 8) shows a side view of a perching bird, head to the right and raised by ~30 deg.
  (The two poles can only move along y, so beak and tail tips lie on the y axis; the designed bird
  is rotated in its sagittal plane to put them there.)

Shape: a loft. For the template direction with polar angle phi and azimuth theta (theta measured
from +z towards +x, so theta = 0 is the back and theta = pi the belly), s = phi / pi in [0, 1]
runs from the tail tip (0) to the beak tip (1); s is mapped piecewise linearly to a forward
coordinate `a` so that each body part gets enough rings, and each cross-section is an ellipse
(centre z_c(a), half-width W(a), heights U(a) above and D(a) below) blended from the parts (body,
neck, head, beak, tail ellipsoids and cones), plus lateral wing bulges. The texture is painted in
the same (s, theta) parametrisation, so colour regions (crown, eye, beak, wings, tail) sit on the
right geometry.

Deformation maps are fitted to the target vertex positions by a regularised linear least-squares
solve (the template's map sampling is linear in the map, and pole rows are kept constant as the
generator's mesh head does). The fit cannot be exact: sampling the half-width map at the 257
non-negative vertices has rank 242 (each ring has 17 sampled vertices but 16 texel columns, so one
alternating pattern per ring is unreachable, a property of the original's layout). Measured over
120 instances, the fitted mesh is within 3.4e-3 of the shape formula (mean 3e-4 to 8e-4 for the 8
base species). The ground truth of a synthetic object is therefore `template.vertex_positions(map)`,
exact by construction, not the formula.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..geometry.procedural import symmetrize_width
from ..geometry.template import MeshTemplate

MAP_SIZE = 32  # deformation map (3, 32, 32), generated at half width 32 x 16
PATTERNS = ("plain", "stripes", "spots", "wing_bars", "streaks")

Color = tuple[float, float, float]


@dataclass
class SpeciesParams:
    """One bird species. Lengths are in template units (the template sphere has radius 1);
    colours are RGB in [0, 1]."""

    name: str = "bird"
    # Body ellipsoid: full length (along the forward axis), width (lateral) and height.
    body_length: float = 1.1
    body_width: float = 0.62
    body_height: float = 0.66
    # Head: radius, height of its centre above the body centre, neck length and thickness
    # (neck_width = neck radius as a fraction of the head radius).
    head_size: float = 0.24
    head_height: float = 0.32
    neck_length: float = 0.06
    neck_width: float = 0.75
    # Tail: length (beyond the body's rear), width at its tip, angle (deg, negative = drooping).
    tail_length: float = 0.45
    tail_width: float = 0.34
    tail_angle: float = -15.0
    # Beak: length beyond the head surface, thickness (base radius) and droop (tip drop / length).
    beak_length: float = 0.16
    beak_thickness: float = 0.07
    beak_droop: float = 0.1
    # Folded wings: bulge amplitude, shoulder position (fraction of the body half-length, forward
    # positive) and length towards the tail.
    wing_size: float = 0.08
    wing_position: float = 0.35
    wing_length: float = 0.8
    # Texture.
    belly_color: Color = (0.85, 0.8, 0.7)
    back_color: Color = (0.45, 0.35, 0.25)
    wing_color: Color = (0.35, 0.27, 0.2)
    head_color: Color = (0.4, 0.3, 0.22)
    beak_color: Color = (0.2, 0.2, 0.2)
    pattern_color: Color = (0.15, 0.12, 0.1)
    crown_extent: float = 90.0   # degrees from the top that the head colour covers (180 = hood)
    pattern: str = "plain"       # one of PATTERNS
    pattern_scale: float = 1.0   # larger = coarser pattern

    def __post_init__(self):
        if self.pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {PATTERNS}, got {self.pattern!r}")


_SHAPE_FIELDS = (
    "body_length", "body_width", "body_height", "head_size", "head_height", "neck_length", "neck_width",
    "tail_length", "tail_width", "tail_angle", "beak_length", "beak_thickness", "beak_droop",
    "wing_size", "wing_position", "wing_length",
)
_COLOR_FIELDS = ("belly_color", "back_color", "wing_color", "head_color", "beak_color", "pattern_color")

# Eight archetypes, chosen to differ clearly in silhouette and in colour/pattern.
_ARCHETYPES = [
    SpeciesParams(
        name="sparrow", pattern="stripes", pattern_scale=1.0,
        belly_color=(0.86, 0.8, 0.68), back_color=(0.55, 0.4, 0.26), wing_color=(0.42, 0.3, 0.2),
        head_color=(0.5, 0.48, 0.45), beak_color=(0.3, 0.28, 0.25), pattern_color=(0.2, 0.14, 0.1),
        crown_extent=80.0, beak_length=0.11, beak_thickness=0.075,
    ),
    SpeciesParams(
        name="cardinal", pattern="plain", body_length=1.05, body_width=0.6, body_height=0.68,
        head_size=0.26, head_height=0.36, tail_length=0.6, tail_width=0.3, tail_angle=-25.0,
        beak_length=0.12, beak_thickness=0.1, beak_droop=0.05,
        belly_color=(0.85, 0.12, 0.1), back_color=(0.7, 0.08, 0.08), wing_color=(0.6, 0.06, 0.06),
        head_color=(0.9, 0.1, 0.1), beak_color=(0.95, 0.5, 0.2), pattern_color=(0.1, 0.05, 0.05),
        crown_extent=110.0,
    ),
    SpeciesParams(
        name="hummingbird", pattern="spots", pattern_scale=0.6, body_length=0.8, body_width=0.42,
        body_height=0.46, head_size=0.19, head_height=0.2, neck_length=0.02, tail_length=0.3,
        tail_width=0.2, tail_angle=-10.0, beak_length=0.62, beak_thickness=0.03, beak_droop=0.05,
        wing_size=0.1, wing_position=0.4, wing_length=1.0,
        belly_color=(0.85, 0.88, 0.85), back_color=(0.15, 0.55, 0.25), wing_color=(0.25, 0.3, 0.25),
        head_color=(0.1, 0.5, 0.3), beak_color=(0.08, 0.08, 0.08), pattern_color=(0.2, 0.45, 0.25),
        crown_extent=95.0,
    ),
    SpeciesParams(
        name="woodpecker", pattern="wing_bars", pattern_scale=0.8, body_length=1.15, body_width=0.55,
        body_height=0.6, head_size=0.25, head_height=0.3, neck_length=0.1, tail_length=0.55,
        tail_width=0.24, tail_angle=-35.0, beak_length=0.34, beak_thickness=0.07, beak_droop=-0.02,
        belly_color=(0.9, 0.9, 0.88), back_color=(0.08, 0.08, 0.08), wing_color=(0.1, 0.1, 0.1),
        head_color=(0.85, 0.08, 0.08), beak_color=(0.25, 0.25, 0.28), pattern_color=(0.95, 0.95, 0.95),
        crown_extent=60.0,
    ),
    SpeciesParams(
        name="gull", pattern="plain", body_length=1.4, body_width=0.68, body_height=0.7,
        head_size=0.27, head_height=0.3, neck_length=0.1, tail_length=0.35, tail_width=0.36,
        tail_angle=0.0, beak_length=0.3, beak_thickness=0.07, beak_droop=0.12,
        wing_size=0.1, wing_position=0.3, wing_length=1.5,
        belly_color=(0.96, 0.96, 0.96), back_color=(0.6, 0.63, 0.68), wing_color=(0.5, 0.53, 0.58),
        head_color=(0.97, 0.97, 0.97), beak_color=(0.95, 0.8, 0.15), pattern_color=(0.05, 0.05, 0.05),
        crown_extent=180.0,
    ),
    SpeciesParams(
        name="swallow", pattern="plain", body_length=0.95, body_width=0.5, body_height=0.5,
        head_size=0.22, head_height=0.18, neck_length=0.0, tail_length=0.85, tail_width=0.52,
        tail_angle=-5.0, beak_length=0.07, beak_thickness=0.06, beak_droop=0.0,
        wing_size=0.12, wing_position=0.5, wing_length=1.6,
        belly_color=(0.92, 0.6, 0.35), back_color=(0.1, 0.15, 0.4), wing_color=(0.08, 0.1, 0.28),
        head_color=(0.12, 0.18, 0.45), beak_color=(0.05, 0.05, 0.05), pattern_color=(0.6, 0.2, 0.1),
        crown_extent=100.0,
    ),
    SpeciesParams(
        name="goldfinch", pattern="wing_bars", pattern_scale=1.2, body_length=0.95, body_width=0.6,
        body_height=0.62, head_size=0.25, head_height=0.28, neck_length=0.03, tail_length=0.38,
        tail_width=0.3, tail_angle=-20.0, beak_length=0.1, beak_thickness=0.08, beak_droop=0.0,
        belly_color=(0.98, 0.88, 0.15), back_color=(0.95, 0.8, 0.1), wing_color=(0.08, 0.08, 0.08),
        head_color=(0.06, 0.06, 0.06), beak_color=(0.95, 0.65, 0.45), pattern_color=(0.98, 0.98, 0.95),
        crown_extent=45.0,
    ),
    SpeciesParams(
        name="heron", pattern="streaks", pattern_scale=1.0, body_length=1.2, body_width=0.5,
        body_height=0.62, head_size=0.18, head_height=0.62, neck_length=0.5, neck_width=0.6,
        tail_length=0.22, tail_width=0.26, tail_angle=-30.0, beak_length=0.55, beak_thickness=0.06,
        beak_droop=0.0, wing_size=0.09, wing_position=0.3, wing_length=1.3,
        belly_color=(0.85, 0.86, 0.9), back_color=(0.45, 0.5, 0.6), wing_color=(0.38, 0.42, 0.52),
        head_color=(0.1, 0.1, 0.12), beak_color=(0.9, 0.75, 0.2), pattern_color=(0.2, 0.22, 0.3),
        crown_extent=50.0,
    ),
]

# Ranges for the random species beyond the eight archetypes.
_RANDOM_RANGES = {
    "body_length": (0.85, 1.4), "body_width": (0.45, 0.68), "body_height": (0.48, 0.7),
    "head_size": (0.18, 0.28), "head_height": (0.15, 0.5), "neck_length": (0.0, 0.35), "neck_width": (0.6, 0.8),
    "tail_length": (0.2, 0.8), "tail_width": (0.2, 0.5), "tail_angle": (-35.0, 5.0),
    "beak_length": (0.07, 0.5), "beak_thickness": (0.04, 0.1), "beak_droop": (-0.05, 0.15),
    "wing_size": (0.06, 0.12), "wing_position": (0.25, 0.5), "wing_length": (0.8, 1.6),
    "crown_extent": (40.0, 180.0), "pattern_scale": (0.6, 1.4),
}


def make_species(n_classes: int = 8, seed: int = 0) -> list[SpeciesParams]:
    """`n_classes` species, deterministic per seed: the eight archetypes (sparrow, cardinal,
    hummingbird, woodpecker, gull, swallow, goldfinch, heron), each perturbed by a few percent
    depending on `seed`, then random species drawn from broad ranges."""
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    rng = np.random.default_rng([seed, 7919])
    species = []
    for k in range(n_classes):
        if k < len(_ARCHETYPES):
            base = _ARCHETYPES[k]
            changes = {f: _jitter_value(f, getattr(base, f), rng, 0.03) for f in _SHAPE_FIELDS}
            species.append(dataclasses.replace(base, **changes))
        else:
            changes = {f: float(rng.uniform(lo, hi)) for f, (lo, hi) in _RANDOM_RANGES.items()}
            belly = rng.uniform(0.55, 1.0, 3)
            back = rng.uniform(0.05, 0.75, 3)
            colors = {
                "belly_color": belly, "back_color": back, "wing_color": back * rng.uniform(0.5, 1.0),
                "head_color": rng.uniform(0.05, 0.95, 3), "beak_color": rng.uniform(0.05, 0.95, 3),
                "pattern_color": rng.uniform(0.0, 1.0, 3),
            }
            changes.update({k2: tuple(float(c) for c in v) for k2, v in colors.items()})
            species.append(SpeciesParams(name=f"species_{k}", pattern=str(rng.choice(PATTERNS)), **changes))
    return species


def _jitter_value(field: str, value: float, rng: np.random.Generator, amount: float) -> float:
    """Multiplicative jitter, additive (in degrees / absolute units) for signed fields."""
    noise = float(np.clip(rng.normal(0.0, amount), -2.5 * amount, 2.5 * amount))
    if field == "tail_angle":
        return value + 100.0 * noise
    if field in ("beak_droop", "neck_length"):
        return value + 0.5 * noise
    return value * (1.0 + noise)


def jitter_shape(params: SpeciesParams, rng: np.random.Generator, amount: float = 0.08) -> SpeciesParams:
    """An instance's shape: every shape field jittered by ~`amount` (relative; clipped at 2.5 sigma)."""
    changes = {f: _jitter_value(f, getattr(params, f), rng, amount) for f in _SHAPE_FIELDS}
    changes["neck_length"] = max(changes["neck_length"], 0.0)
    return dataclasses.replace(params, **changes)


def jitter_colors(params: SpeciesParams, rng: np.random.Generator, amount: float = 0.05) -> SpeciesParams:
    """An instance's colours: a shared brightness factor plus per-colour, per-channel noise."""
    gain = 1.0 + rng.normal(0.0, amount)
    changes = {}
    for f in _COLOR_FIELDS:
        c = np.asarray(getattr(params, f)) * gain * (1.0 + rng.normal(0.0, amount, 3)) + rng.normal(0.0, amount / 2, 3)
        changes[f] = tuple(float(x) for x in np.clip(c, 0.0, 1.0))
    return dataclasses.replace(params, **changes)


# -- shape: the loft ---------------------------------------------------------------------------------

def _smoothstep(e0: float, e1: float, x: torch.Tensor) -> torch.Tensor:
    t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0)
    return t * t * (3 - 2 * t)


def _ellipse(a: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """sqrt(1 - ((a - c)/r)^2) on [lo, hi], 0 outside (the profile of an ellipsoid)."""
    c, r = (lo + hi) / 2, (hi - lo) / 2
    return (1 - ((a - c) / r) ** 2).clamp(min=0.0).sqrt()


@dataclass
class _Layout:
    """Derived positions along the forward coordinate a (body centre at a = 0, z up)."""

    body_front: float
    body_rear: float
    head_a: float
    head_z: float
    beak_base: float
    beak_tip: float
    tail_root: float
    tail_tip: float
    knots_s: tuple
    knots_a: tuple


def _layout(p: SpeciesParams) -> _Layout:
    half = p.body_length / 2
    body_front, body_rear = 0.9 * half, -1.1 * half
    head_a = body_front + p.neck_length + 0.45 * p.head_size
    beak_base = head_a + 0.8 * p.head_size
    beak_tip = beak_base + p.beak_length
    tail_root = -0.6 * half
    tail_tip = body_rear - p.tail_length
    # Rings (s = r / 16) per part: tail 1-2, body 3-9, neck and head 10-13, beak 14-15.
    knots_s = (0.0, 2.6 / 16, 9.6 / 16, 13.6 / 16, 1.0)
    knots_a = (tail_tip, body_rear + 0.08 * half, body_front - 0.05 * half, beak_base, beak_tip)
    return _Layout(body_front, body_rear, head_a, p.head_height, beak_base, beak_tip, tail_root, tail_tip,
                   knots_s, knots_a)


def _a_of_s(lay: _Layout, s: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear map from s in [0, 1] (tail tip -> beak tip) to the forward coordinate."""
    ks = torch.tensor(lay.knots_s, dtype=s.dtype)
    ka = torch.tensor(lay.knots_a, dtype=s.dtype)
    i = torch.searchsorted(ks, s.clamp(0, 1).contiguous(), right=True).clamp(1, len(ks) - 1)
    t = (s - ks[i - 1]) / (ks[i] - ks[i - 1])
    return ka[i - 1] + t * (ka[i] - ka[i - 1])


def _parts(p: SpeciesParams, lay: _Layout, a: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """Per part: (centre z, half-width, height above, depth below, closed-range mask) at a."""
    half = p.body_length / 2
    bw, bh = p.body_width / 2, p.body_height / 2
    hr = p.head_size
    parts = []
    # Body: an egg, fuller at the front, belly deeper than the back.
    e = _ellipse(a, lay.body_rear, lay.body_front + 0.1 * half)
    parts.append((torch.zeros_like(a), bw * e, 0.9 * bh * e, 1.1 * bh * e,
                  (a >= lay.body_rear) & (a <= lay.body_front + 0.1 * half)))
    # Neck: an ellipsoid from the upper front of the body to the head centre.
    n0, n1 = 0.45 * half, lay.head_a + 0.2 * hr
    e = _ellipse(a, n0, n1)
    t = ((a - n0) / (n1 - n0)).clamp(0, 1)
    nz = (1 - t) * 0.45 * bh + t * lay.head_z
    nr = p.neck_width * hr
    parts.append((nz, nr * e, nr * e, nr * e, (a >= n0) & (a <= n1)))
    # Head.
    e = _ellipse(a, lay.head_a - hr, lay.head_a + hr)
    parts.append((torch.full_like(a, lay.head_z), 0.88 * hr * e, hr * e, 0.95 * hr * e,
                  (a >= lay.head_a - hr) & (a <= lay.head_a + hr)))
    # Beak: a cone from inside the head to the tip, drooping quadratically.
    k0 = lay.head_a + 0.4 * hr
    t = ((a - k0) / (lay.beak_tip - k0)).clamp(0, 1)
    tb = ((a - lay.beak_base) / p.beak_length).clamp(0, 1)
    kz = lay.head_z - 0.12 * hr - p.beak_droop * p.beak_length * tb ** 2
    kr = p.beak_thickness * (1 - t) ** 0.9 * (a >= k0)
    parts.append((kz, 0.85 * kr, kr, kr, (a >= k0) & (a <= lay.beak_tip)))
    # Tail: a thin plate fanning out from inside the body to a rounded tip.
    t = ((a - lay.tail_tip) / (lay.tail_root - lay.tail_tip)).clamp(0, 1)  # 0 at the tip
    root_z = 0.15 * bh
    tz = root_z + (lay.tail_root - a.clamp(max=lay.tail_root)) * math.tan(math.radians(p.tail_angle))
    cap = (1 - (1 - (t / 0.12).clamp(max=1)) ** 2).sqrt()
    fade = 1 - _smoothstep(lay.tail_root, 0.1 * half, a)
    tw = (p.tail_width / 2) * (1 - 0.45 * t) * cap * fade
    th = (0.05 + 0.1 * t) * cap * fade
    parts.append((tz, tw, th, th, (a >= lay.tail_tip) & (a <= 0.1 * half)))
    return parts


def _profile(p: SpeciesParams, lay: _Layout, a: torch.Tensor):
    """Blended cross-section at a: centre z_c, half-width W, height U above and depth D below."""
    parts = _parts(p, lay, a)
    pw = 6.0
    weights = [((w + u + d) + 1e-6 * m) ** 4 * m for (_, w, u, d, m) in parts]
    total = sum(weights).clamp(min=1e-300)
    zc = sum(wt * z for wt, (z, *_rest) in zip(weights, parts)) / total
    width = sum(w ** pw for (_, w, _u, _d, _m) in parts) ** (1 / pw)
    up, down = 0, 0
    for z, w, u, d, m in parts:
        presence = (w / 0.02).clamp(max=1.0)
        up = up + ((z + u - zc).clamp(min=0) * presence) ** pw
        down = down + ((zc - (z - d)).clamp(min=0) * presence) ** pw
    return zc, width, up ** (1 / pw), down ** (1 / pw)


def _wing_weight(p: SpeciesParams, a: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Wing footprint in (a, |theta|) in [0, 1]: on the upper flanks, from the shoulder back."""
    half = p.body_length / 2
    shoulder = p.wing_position * half
    tip = shoulder - p.wing_length * half
    t = ((a - tip) / (shoulder - tip))  # 0 at the wing tip, 1 at the shoulder
    along = (_smoothstep(0.0, 0.45, t) * (1 - _smoothstep(0.85, 1.05, t)))
    across = torch.exp(-0.5 * ((theta.abs() - math.radians(72)) / math.radians(26)) ** 2)
    return along * across


def _alignment(p: SpeciesParams, lay: _Layout):
    """Rotation (cos, sin) and offsets putting the beak and tail tips on the object's y axis."""
    tips = torch.tensor([lay.tail_tip, lay.beak_tip], dtype=torch.float64)
    zc, *_ = _profile(p, lay, tips)
    da, dz = lay.beak_tip - lay.tail_tip, float(zc[1] - zc[0])
    angle = math.atan2(dz, da)
    return math.cos(angle), math.sin(angle), float(zc[0]), lay.tail_tip


def bird_points(p: SpeciesParams, s: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Object-space points (..., 3) of the bird surface at loft coordinates s (0 = tail tip, 1 =
    beak tip) and theta (azimuth from the back, +x side positive). float64."""
    s, theta = torch.as_tensor(s, dtype=torch.float64), torch.as_tensor(theta, dtype=torch.float64)
    lay = _layout(p)
    a = _a_of_s(lay, s)
    zc, width, up, down = _profile(p, lay, a)
    height = (up + down) / 2 + (up - down) / 2 * torch.cos(theta)
    wing = p.wing_size * _wing_weight(p, a, theta) * (width / (width + 0.05))
    x = (width + wing) * torch.sin(theta)
    z = zc + (height + 0.3 * wing) * torch.cos(theta)
    # Rigid motion in the sagittal plane: tail tip -> origin, beak tip onto the forward axis.
    c, sn, z0, a0 = _alignment(p, lay)
    da, dz = a - a0, z - z0
    fwd = c * da + sn * dz
    upz = -sn * da + c * dz
    fwd = fwd - (c * (0.0 - a0) + sn * (0.0 - z0))  # body centre (a = 0, z = 0) at forward = 0
    return torch.stack([x, -fwd, upz], dim=-1)


@functools.lru_cache(maxsize=1)
def _template() -> MeshTemplate:
    return MeshTemplate.uv_sphere(16, 32, symmetric=True)


def _template_loft_coords(template: MeshTemplate) -> tuple[torch.Tensor, torch.Tensor]:
    v = template.vertices.double()
    s = torch.arccos(v[:, 1].clamp(-1, 1)) / math.pi
    theta = torch.atan2(v[:, 0], v[:, 2])
    return s, theta


def species_vertices(params: SpeciesParams, template: MeshTemplate | None = None) -> torch.Tensor:
    """Target positions (V, 3) float64 of the template's vertices for this (instance's) shape."""
    template = template or _template()
    s, theta = _template_loft_coords(template)
    pts = bird_points(params, s, theta)
    pts[template.zero_index, 0] = 0.0  # exactly on the mirror plane
    return pts


# -- the least-squares fit of deformation maps --------------------------------------------------------

class DeformationFitter:
    """Linear map from target vertex positions to the half-width deformation map that reproduces
    them through `template.vertex_positions(symmetrize_width(half))`.

    The sampling is linear in the map; the pole rows are constrained to one value each (as the
    generator's mesh head produces them). The sampling matrix has rank 242 for 257 sampled
    vertices, so the fit is a least-squares one: data term plus a small Dirichlet (smoothness)
    energy on the symmetrised map and a tiny ridge term (see the module docstring for its error)."""

    def __init__(self, template: MeshTemplate, height: int = MAP_SIZE, width: int = MAP_SIZE,
                 smoothness: float = 1e-4, ridge: float = 1e-8):
        self.template = template
        self.height, self.width = height, width
        half_w = width // 2
        n_half = height * half_w
        basis = torch.eye(n_half, dtype=torch.float64).reshape(n_half, 1, height, half_w)
        full = symmetrize_width(basis)  # (n_half, 1, H, W)
        template64 = copy.deepcopy(template).to(device="cpu", dtype=torch.float64)
        sampled = template64._sample_at_vertices(full, shift_width=width)[..., 0]  # (n_half, Nnonneg)
        A = sampled.T.numpy()  # (Nnonneg, n_half)
        # Parameters: rows 1..H-2 free, rows 0 and H-1 one value each.
        n_free = (height - 2) * half_w
        P = np.zeros((n_half, n_free + 2))
        P[half_w:n_half - half_w, :n_free] = np.eye(n_free)
        P[:half_w, n_free] = 1.0
        P[n_half - half_w:, n_free + 1] = 1.0
        S = full.reshape(n_half, height * width).T.numpy()  # (H W, n_half)
        idx = np.arange(height * width).reshape(height, width)
        rows = [(idx[:, (j + 1) % width], idx[:, j]) for j in range(width)]
        rows += [(idx[i + 1], idx[i]) for i in range(height - 1)]
        G = np.zeros((sum(len(r[0]) for r in rows), height * width))
        k = 0
        for plus, minus in rows:
            G[np.arange(k, k + len(plus)), plus] += 1.0
            G[np.arange(k, k + len(plus)), minus] -= 1.0
            k += len(plus)
        GS = G @ S @ P
        Ap = A @ P
        normal = Ap.T @ Ap + smoothness * (GS.T @ GS) + ridge * np.eye(P.shape[1])
        self.solve_matrix = torch.from_numpy(P @ np.linalg.solve(normal, Ap.T))  # (n_half, Nnonneg)

    def local_offsets(self, target: torch.Tensor) -> torch.Tensor:
        """(V, 3) target positions -> (Nnonneg, 3) offsets in the nonneg vertices' local frames."""
        t = self.template
        idx = t.nonneg_index
        offset = target.double()[idx] - t.vertices.double()[idx]
        return torch.einsum("nkd,nd->nk", t.tangent_frames.double()[idx], offset)

    def fit(self, target: torch.Tensor) -> torch.Tensor:
        """(V, 3) target positions -> (3, H, W) symmetric deformation map (float32)."""
        local = self.local_offsets(target)  # (N, 3)
        half = (self.solve_matrix @ local).T.reshape(3, self.height, self.width // 2)
        return symmetrize_width(half).float()


@functools.lru_cache(maxsize=1)
def _fitter() -> DeformationFitter:
    return DeformationFitter(_template())


def fit_deformation_map(target: torch.Tensor) -> torch.Tensor:
    """(V, 3) target positions of the 16-ring template -> (3, 32, 32) deformation map."""
    return _fitter().fit(target)


def species_deformation_map(params: SpeciesParams, rng: np.random.Generator | None = None) -> torch.Tensor:
    """(3, 32, 32) deformation map of the species' shape; with `rng`, of a jittered instance."""
    if rng is not None:
        params = jitter_shape(params, rng)
    return fit_deformation_map(species_vertices(params))


# -- texture ------------------------------------------------------------------------------------------

def _blend(base: torch.Tensor, color, weight: torch.Tensor) -> torch.Tensor:
    c = torch.as_tensor(color, dtype=base.dtype)[:, None, None]
    return base * (1 - weight) + c * weight


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]) -> torch.Tensor:
    coarse = torch.from_numpy(rng.standard_normal(cells)).float()[None, None]
    return F.interpolate(coarse, size=shape, mode="bicubic", align_corners=True)[0, 0]


def species_texture(params: SpeciesParams, rng: np.random.Generator | None = None, size: int = 256) -> torch.Tensor:
    """(3, size, size) texture in [-1, 1], painted at half width and symmetrised. Uses the shape
    fields of `params` to place the regions (pass the same instance params as for the map); with
    `rng`, colours are jittered and fine noise and pattern offsets vary per instance."""
    if size % 4:
        raise ValueError(f"texture size must be a multiple of 4, got {size}")
    if rng is not None:
        params = jitter_colors(params, rng)
    p = params
    lay = _layout(p)
    half_w = size // 2
    # Row i <-> v = 1 - i / (size - 1) (align_corners sampling), s = 1 - v; half-width column j <->
    # u = (size/4 + j + 0.5) / size, theta = 2 pi (u - 1/4).
    s = torch.linspace(0, 1, size, dtype=torch.float64)[:, None].expand(size, half_w)
    theta = (2 * math.pi * (torch.arange(half_w, dtype=torch.float64) + 0.5) / size)[None].expand(size, half_w)
    a = _a_of_s(lay, s)
    deg = torch.rad2deg(theta)
    hr = p.head_size
    phase = rng.uniform(0, 1, 2) if rng is not None else np.zeros(2)

    belly = _smoothstep(80.0, 125.0, deg)
    tex = _blend(torch.as_tensor(p.back_color, dtype=torch.float64)[:, None, None].expand(3, size, half_w),
                 p.belly_color, belly)
    # Patterns on back or belly.
    scale = 0.12 * p.pattern_scale
    if p.pattern == "stripes":  # transverse bars on the back and wings
        bars = _smoothstep(0.55, 0.75, torch.sin(2 * math.pi * (a / scale + phase[0])))
        tex = _blend(tex, p.pattern_color, 0.8 * bars * (1 - belly))
    elif p.pattern == "streaks":  # longitudinal streaks on breast and belly
        arc = theta * 0.3
        streak = _smoothstep(0.6, 0.85, torch.sin(2 * math.pi * (arc / (0.5 * scale) + phase[0])))
        along = _smoothstep(-0.3, 0.2, a / (p.body_length / 2)) * belly
        tex = _blend(tex, p.pattern_color, 0.7 * streak * along)
    elif p.pattern == "spots":  # dots on breast and belly
        arc = theta * 0.3
        ga, gb = a / scale + phase[0], arc / scale + phase[1] + 0.5 * torch.floor(a / scale + phase[0])
        d2 = (ga - torch.round(ga)) ** 2 + (gb - torch.round(gb)) ** 2
        spot = 1 - _smoothstep(0.05, 0.09, d2)
        tex = _blend(tex, p.pattern_color, 0.85 * spot * _smoothstep(60.0, 100.0, deg))
    # Wings (with bars for wing_bars).
    wing = _smoothstep(0.25, 0.45, _wing_weight(p, a, theta))
    tex = _blend(tex, p.wing_color, wing)
    if p.pattern == "wing_bars":
        half = p.body_length / 2
        shoulder = p.wing_position * half
        for k in (0.25, 0.45):
            centre = shoulder - k * p.wing_length * half * p.pattern_scale
            bar = 1 - _smoothstep(0.02, 0.045, (a - centre).abs())
            tex = _blend(tex, p.pattern_color, bar * wing)
    # Tail: a darker mix of back and wing colours.
    tail = 1 - _smoothstep(lay.body_rear - 0.05, lay.body_rear + 0.12, a)
    tail_color = tuple(0.8 * (0.5 * b + 0.5 * w) for b, w in zip(p.back_color, p.wing_color))
    tex = _blend(tex, tail_color, tail)
    # Head: crown colour down to crown_extent degrees from the top, throat lighter.
    head = _smoothstep(lay.head_a - 1.1 * hr, lay.head_a - 0.6 * hr, a)
    crown = 1 - _smoothstep(p.crown_extent - 15.0, p.crown_extent + 15.0, deg)
    tex = _blend(tex, p.head_color, head * crown)
    # Eye: dark pupil with a pale ring, on the side of the head.
    eye_a, eye_t = lay.head_a + 0.3 * hr, math.radians(68.0)
    d = torch.sqrt((a - eye_a) ** 2 + (hr * (theta - eye_t)) ** 2) / hr
    ring_color = tuple(min(1.0, 0.4 + 0.6 * c) for c in p.belly_color)
    tex = _blend(tex, ring_color, 1 - _smoothstep(0.24, 0.3, d))
    tex = _blend(tex, (0.03, 0.03, 0.03), 1 - _smoothstep(0.15, 0.19, d))
    # Beak.
    beak = _smoothstep(lay.beak_base - 0.03, lay.beak_base + 0.01, a)
    tex = _blend(tex, p.beak_color, beak)
    # Soft shading baked in (darker belly underside), then fine feather noise.
    tex = tex * (1 - 0.15 * _smoothstep(120.0, 180.0, deg))
    tex = tex.float()
    if rng is not None:
        noise = 0.04 * _smooth_noise(rng, (size, half_w), (size // 8, half_w // 8))
        noise = noise + 0.02 * torch.from_numpy(rng.standard_normal((size, half_w))).float()
        tex = tex * (1 + noise)[None]
    tex = tex.clamp(0, 1) * 2 - 1
    tex[:, 0] = tex[:, 0].mean(-1, keepdim=True)  # one colour per pole
    tex[:, -1] = tex[:, -1].mean(-1, keepdim=True)
    return symmetrize_width(tex)


# -- instances ----------------------------------------------------------------------------------------

def instance_params(species: list[SpeciesParams], class_id: int, seed: int) -> tuple[SpeciesParams, np.random.Generator]:
    """The jittered shape params of instance `seed` of class `class_id`, and the rng that then
    drives its texture (so that sample_instance is deterministic)."""
    if not 0 <= class_id < len(species):
        raise ValueError(f"class_id {class_id} out of range for {len(species)} species")
    rng = np.random.default_rng([int(seed), int(class_id), 104729])
    return jitter_shape(species[class_id], rng), rng


def sample_instance(species: list[SpeciesParams], class_id: int, seed: int,
                    texture_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """One instance: (deformation map (3, 32, 32), texture (3, T, T) in [-1, 1]), both
    mirror-symmetric, deterministic given (species, class_id, seed)."""
    params, rng = instance_params(species, class_id, seed)
    return species_deformation_map(params), species_texture(params, rng, texture_size)
