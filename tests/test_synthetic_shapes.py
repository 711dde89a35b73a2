"""Procedural bird species: symmetry, representability by the mesh head, determinism, bird-likeness."""

from __future__ import annotations

import math

import pytest
import torch

from meshinv.datagen.synthetic_shapes import (
    PATTERNS, instance_params, make_species, sample_instance, species_deformation_map, species_texture,
    species_vertices,
)
from meshinv.geometry.procedural import symmetrize_width
from meshinv.geometry.template import MeshTemplate

FIT_TOLERANCE = 5e-3  # max vertex error of the least-squares map vs the analytic loft (measured <= 3.5e-3)


@pytest.fixture(scope="module")
def template():
    return MeshTemplate.uv_sphere()


@pytest.fixture(scope="module")
def species():
    return make_species(8, seed=0)


@pytest.fixture(scope="module")
def instances(species):
    """(class, seed) -> (instance params, map, texture) for 8 classes x 3 seeds, small textures."""
    out = {}
    for c in range(len(species)):
        for seed in range(3):
            params, _ = instance_params(species, c, seed)
            out[c, seed] = (params, *sample_instance(species, c, seed, texture_size=64))
    return out


def test_make_species_deterministic_and_distinct():
    a, b, other = make_species(8, seed=0), make_species(8, seed=0), make_species(8, seed=1)
    assert a == b and a != other
    assert len({s.name for s in a}) == 8 and len({s.pattern for s in a}) >= 4
    many = make_species(12, seed=3)
    assert len(many) == 12 and all(s.pattern in PATTERNS for s in many)
    with pytest.raises(ValueError):
        make_species(0)


def test_sample_instance_deterministic(species):
    m1, t1 = sample_instance(species, 2, seed=5, texture_size=64)
    m2, t2 = sample_instance(species, 2, seed=5, texture_size=64)
    assert torch.equal(m1, m2) and torch.equal(t1, t2)
    m3, t3 = sample_instance(species, 2, seed=6, texture_size=64)
    assert (m1 - m3).abs().max() > 1e-3 and (t1 - t3).abs().max() > 1e-2
    assert m1.shape == (3, 32, 32) and t1.shape == (3, 64, 64)
    assert m1.dtype == t1.dtype == torch.float32


def test_maps_and_textures_symmetric_and_in_range(instances):
    for _, deformation, texture in instances.values():
        assert torch.equal(deformation, symmetrize_width(deformation[..., 8:24]))
        assert torch.equal(texture, symmetrize_width(texture[..., 16:48]))
        assert texture.min() >= -1 and texture.max() <= 1
        # Pole rows are constant, as the generator's mesh head makes them.
        assert torch.allclose(deformation[:, [0, -1]], deformation[:, [0, -1]].mean(-1, keepdim=True), atol=1e-6)


def test_mesh_symmetric_and_fits_target(template, instances):
    for params, deformation, _ in instances.values():
        v = template.vertex_positions(deformation[None])[0]
        mirrored = v[template.pos_index] * torch.tensor([-1.0, 1.0, 1.0])
        assert torch.allclose(v[template.neg_index], mirrored, atol=1e-6)
        assert v[template.zero_index, 0].abs().max() < 1e-6
        error = (v.double() - species_vertices(params, template)).norm(dim=-1)
        assert error.max() < FIT_TOLERANCE, float(error.max())


def test_rng_jitters_shape(species):
    import numpy as np

    base = species_deformation_map(species[0])
    jittered = species_deformation_map(species[0], np.random.default_rng(0))
    assert (base - jittered).abs().max() > 1e-3
    assert torch.equal(species_deformation_map(species[0]), base)


def _centred(template, deformation):
    v = template.vertex_positions(deformation[None])[0]
    return v - v.mean(0)


def test_classes_distinct(template, instances, species):
    n = len(species)
    meshes = {k: _centred(template, m) for k, (_, m, _) in instances.items()}
    means = [torch.stack([meshes[c, s] for s in range(3)]).mean(0) for c in range(n)]
    rms = lambda a, b: float(((a - b) ** 2).sum(-1).mean().sqrt())  # noqa: E731
    within = sum(rms(meshes[c, s], means[c]) for c in range(n) for s in range(3)) / (3 * n)
    between = [rms(means[i], means[j]) for i in range(n) for j in range(i + 1, n)]
    # Measured: within ~0.045, between 0.07 (sparrow vs cardinal, mostly a texture difference) to 0.35.
    assert sum(between) / len(between) > 3 * within and min(between) > within, (between, within)
    # Textures differ more between classes than within.
    tex = {k: t for k, (_, _, t) in instances.items()}
    t_within = max(float((tex[c, 0] - tex[c, s]).abs().mean()) for c in range(n) for s in (1, 2))
    t_between = min(float((tex[i, 0] - tex[j, 0]).abs().mean()) for i in range(n) for j in range(i + 1, n))
    assert t_between > t_within, (t_between, t_within)


def test_bird_like_and_not_inverted(template, instances):
    ring = torch.round(torch.arccos(template.vertices[:, 1].clamp(-1, 1)) / math.pi * 16).long()
    south = int(template.vertices[:, 1].argmin())
    for (c, seed), (_, deformation, _) in instances.items():
        v = template.vertex_positions(deformation[None])[0].double()
        extent = v.max(0).values - v.min(0).values
        # Forward axis (-y) is the longest; the beak tip (south pole) is the most forward point.
        assert extent[1] > 1.5 * extent[0] and extent[1] > 1.5 * extent[2]
        assert int(v[:, 1].argmin()) == south
        # No degenerate faces; every face faces away from its cross-section centres.
        a, b, d = (v[template.faces[:, k]] for k in range(3))
        cross = torch.linalg.cross(b - a, d - a)
        assert (cross.norm(dim=-1) / 2).min() > 1e-6
        normals = cross / cross.norm(dim=-1, keepdim=True)
        centroid = (a + b + d) / 3
        ring_centres = torch.stack([v[ring == r].mean(0) for r in range(17)])
        local_centre = ring_centres[ring[template.faces]].mean(1)
        assert ((normals * (centroid - local_centre)).sum(-1) > 0).all(), (c, seed)
        # Against the mesh centre (long necks and drooping tails make a few exceptions).
        outward = float(((normals * (centroid - v.mean(0))).sum(-1) > 0).double().mean())
        assert outward > 0.8, (c, seed, outward)
        # Positive enclosed volume.
        volume = float((a * torch.linalg.cross(b, d)).sum() / 6)
        assert volume > 0.05


def test_species_texture_regions(species):
    # Belly (theta near pi: middle-right of the half-width) lighter than the back (theta near 0)
    # for the sparrow; texture size must be a multiple of 4.
    tex = species_texture(species[0], size=64)
    half = tex[..., 16:48]
    back, belly = half[:, 20:40, :4].mean(), half[:, 20:40, -4:].mean()
    assert belly > back
    with pytest.raises(ValueError):
        species_texture(species[0], size=30)
