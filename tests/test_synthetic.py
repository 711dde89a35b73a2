"""The procedural category: determinism, ground truth that explains the pixels, framing, clutter,
occluders, the written split and its reader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meshinv.data.preprocess import CropConfig
from meshinv.data.synthetic import SyntheticDataset
from meshinv.datagen.synthetic import (
    SyntheticConfig, SyntheticGenerator, contact_sheet, sample_id, view_quaternion, write_split,
)
from meshinv.geometry import WeakPerspectiveCamera
from meshinv.render import MeshRenderer

SMALL = dict(image_size=96, texture_size=64, n_classes=8)


@pytest.fixture(scope="module")
def generator():
    return SyntheticGenerator(SyntheticConfig(**SMALL))


@pytest.fixture(scope="module")
def samples(generator):
    return [generator.make("train", i) for i in range(12)]


def iou(a, b):
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum()) / float((a | b).sum())


def test_same_seed_same_sample_and_new_seed_new_sample(generator, samples):
    again = generator.make("train", 3)
    assert np.array_equal(again.image, samples[3].image) and torch.equal(again.camera_ndc, samples[3].camera_ndc)
    other = SyntheticGenerator(SyntheticConfig(**SMALL, seed=1)).make("train", 3)
    assert not np.allclose(other.image, samples[3].image)
    assert not torch.allclose(other.camera_ndc, samples[3].camera_ndc)
    # Splits do not share samples.
    assert not np.allclose(generator.make("test", 3).image, samples[3].image)


def test_ground_truth_mesh_and_camera_reproduce_the_full_mask(generator, samples):
    renderer = MeshRenderer(SMALL["image_size"])
    for s in samples:
        ndc = WeakPerspectiveCamera.from_tensor(s.camera_ndc[None]).transform(s.vertices[None])
        out = generator.template.render(renderer, ndc, s.texture[None])
        assert np.array_equal(out.mask[0, 0].numpy() > 0.5, s.full_mask)
        assert not (s.visible_mask & ~s.full_mask).any()
        rendered = ((out.image[0] + 1) / 2).permute(1, 2, 0).numpy()
        assert np.allclose(rendered[s.visible_mask], s.image[s.visible_mask], atol=1e-6)


def test_shapes_are_mirror_symmetric_and_exactly_the_template_deformed(generator, samples):
    template = generator.template
    for s in samples[:4]:
        assert torch.allclose(s.vertices, template.vertex_positions(s.deformation_map[None])[0])
        v = s.vertices
        assert torch.allclose(v[template.neg_index], v[template.pos_index] * torch.tensor([-1.0, 1, 1]), atol=1e-6)
        # Bird-like: elongated along the body axis (y), narrower side to side (x).
        extent = v.max(0).values - v.min(0).values
        assert extent[1] > 1.3 * extent[0]
        assert s.texture.shape == (3, SMALL["texture_size"], SMALL["texture_size"])


def test_framing_views_and_classes_vary(samples):
    size = SMALL["image_size"]
    fills = []
    for s in samples:
        rows, cols = np.nonzero(s.full_mask)
        assert rows.min() > 0 and cols.min() > 0 and rows.max() < size - 1 and cols.max() < size - 1  # in frame
        fills.append(max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) / size)
    assert 0.47 <= min(fills) and max(fills) <= 0.88 and max(fills) - min(fills) > 0.1
    assert len({s.class_id for s in samples}) >= 4
    quaternions = torch.stack([s.camera_ndc[3:] for s in samples])
    assert (quaternions @ quaternions.T).abs().min() < 0.7  # views far apart exist


def test_view_quaternion_elevation_shows_the_back():
    """Positive elevation looks from above: the object's back (+z) turns towards the viewer (NDC z up)."""
    back = torch.tensor([[[0.0, 0.0, 1.0]]])
    def ndc_z(elevation):
        q = view_quaternion(0.0, elevation, 0.0).float()[None]
        camera = WeakPerspectiveCamera(torch.ones(1, 1), torch.zeros(1, 2), q)
        return float(camera.transform(back)[0, 0, 2])
    assert ndc_z(40.0) > ndc_z(0.0) > ndc_z(-20.0)


def test_backgrounds_are_cluttered_never_flat(samples):
    for s in samples:
        background = s.image[~s.full_mask]
        assert background.std(0).min() > 0.03
        # Many distinct colours (not a few flat regions).
        assert len(np.unique((background * 32).astype(int), axis=0)) > 50


def test_occluders_follow_the_configured_fraction():
    always = SyntheticGenerator(SyntheticConfig(**SMALL, occluder_fraction=1.0))
    never = SyntheticGenerator(SyntheticConfig(**SMALL, occluder_fraction=0.0))
    for i in range(4):
        s = always.make("val", i)
        hidden = s.full_mask.sum() - s.visible_mask.sum()
        assert s.occluded and hidden > 0 and s.visible_mask.sum() >= 0.6 * s.full_mask.sum()
        t = never.make("val", i)
        assert not t.occluded and np.array_equal(t.visible_mask, t.full_mask)


def test_written_split_reads_back_with_consistent_cropped_ground_truth(tmp_path, generator):
    cfg = SyntheticConfig(**{**SMALL, "image_size": 256}, out_dir=str(tmp_path), occluder_fraction=0.5)
    root = write_split(cfg, "val", 6, SyntheticGenerator(cfg))
    assert len(list((root / "images").glob("*.png"))) == 6 and (root / "annotations.json").is_file()
    renderer = MeshRenderer(256)
    for mirror in (False, True):
        dataset = SyntheticDataset(root, CropConfig(img_size=256), mirror=mirror)
        assert len(dataset) == 6 and dataset.image_ids()[0] == sample_id("val", 0)
        ious = []
        for i in range(len(dataset)):
            s = dataset[i]
            assert s.image.shape == (3, 256, 256) and s.gt["vertices"].shape == (482, 3)
            assert s.gt["deformation_map"].shape == (3, 32, 32) and s.gt["full_mask"].shape == (1, 256, 256)
            ndc = WeakPerspectiveCamera.from_tensor(s.camera[None]).transform(s.gt["vertices"][None])
            mask = generator.template.render(renderer, ndc, s.gt["texture"][None]).mask[0]
            ious.append(iou(mask, s.gt["full_mask"]))
            assert not ((s.mask > 0.5) & (s.gt["full_mask"] < 0.5)).any()
        # Resampling a binary mask moves its edge by up to half a pixel, which costs thin birds most
        # (measured: min 0.975 from 256 px sources, 0.991 from 512 px: no systematic offset).
        assert np.mean(ious) >= 0.98 and min(ious) >= 0.97, ious


def test_write_split_resumes_without_redoing_finished_samples(tmp_path):
    cfg = SyntheticConfig(**SMALL, out_dir=str(tmp_path))
    gen = SyntheticGenerator(cfg)
    root = write_split(cfg, "test", 3, gen)
    stamp = (root / "gt" / "test_00001.npz").stat().st_mtime_ns
    (root / "gt" / "test_00002.npz").write_bytes(b"damaged")
    first_image = (root / "images" / "test_00000.png").read_bytes()
    write_split(cfg, "test", 3, gen)
    assert (root / "gt" / "test_00001.npz").stat().st_mtime_ns == stamp      # kept
    assert (root / "gt" / "test_00002.npz").stat().st_size > 100             # remade
    assert (root / "images" / "test_00000.png").read_bytes() == first_image


def test_contact_sheet_tiles(generator):
    tiles = contact_sheet(generator, "test", rows=2, azimuths=(0, 180), image_size=32)
    assert tiles.shape == (2 * 5, 3, 32, 32)
    assert tiles.min() >= -1 and tiles.max() <= 1
