"""Pseudo-GT UV maps: the visible texture is the true one, re-rendering reproduces the photo, the
UV mirror matches mirroring the photo, the file formats (ours, ConvMesh's) round-trip, and ConvMesh's
pickles are only unpickled when the caller says it trusts them."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO_ROOT
from meshinv.data.preprocess import CropConfig
from meshinv.data.pseudogt import PseudoGTDataset, load_pseudogt, mirror_uv, save_pseudogt
from meshinv.data.sample import DataError
from meshinv.data.synthetic import SyntheticDataset
from meshinv.datagen.pseudogt import (
    PseudoGTConfig, build_pseudogt_folder, build_pseudogt_textures, convert_convmesh_pseudogt, masked_image,
    texel_surface,
)
from meshinv.datagen.synthetic import SyntheticConfig, SyntheticGenerator, write_split
from meshinv.geometry import WeakPerspectiveCamera
from meshinv.render import MeshRenderer

TEXTURE = 64


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    cfg = SyntheticConfig(image_size=128, texture_size=128, out_dir=str(tmp_path_factory.mktemp("syn")),
                          occluder_fraction=0.5)
    generator = SyntheticGenerator(cfg)
    root = write_split(cfg, "train", 6, generator)
    return generator, SyntheticDataset(root, CropConfig(img_size=128))


@pytest.fixture(scope="module")
def batch(split):
    generator, dataset = split
    samples = [dataset[i] for i in range(len(dataset))]
    stack = {k: torch.stack([getattr(s, k) for s in samples]) for k in ("image", "mask", "camera")}
    stack["vertices"] = torch.stack([s.gt["vertices"] for s in samples])
    stack["texture_gt"] = torch.stack([s.gt["texture"] for s in samples])
    surface = texel_surface(generator.template, TEXTURE)
    texture, alpha = build_pseudogt_textures(stack["image"], stack["mask"], stack["camera"], stack["vertices"],
                                             generator.template, surface)
    return generator, surface, stack, texture, alpha


def test_texel_surface_covers_the_uv_layout(split):
    generator, _ = split
    surface = texel_surface(generator.template, TEXTURE)
    assert surface.texel.numel() > 0.9 * TEXTURE * TEXTURE
    assert torch.allclose(surface.bary.sum(-1), torch.ones(len(surface.bary)), atol=1e-5)
    assert surface.bary.min() > -1e-4


def test_visible_pseudogt_texture_matches_the_true_texture(batch):
    _, _, stack, texture, alpha = batch
    truth = F.interpolate(stack["texture_gt"], size=TEXTURE, mode="area")
    error = ((texture - truth).abs().mean(1, keepdim=True))[alpha > 0]
    # Measured on these 6 images: mean 0.02, median 0.006 (images in [-1, 1]); the mean comes from
    # texels seen at grazing angles, where one pixel spans several texels.
    assert error.mean() < 0.05 and error.median() < 0.02
    assert 0.15 < alpha.mean() < 0.5  # about one side of the bird is seen
    assert (texture[alpha.expand_as(texture) == 0] == 0).all()


def test_rerendering_with_the_pseudogt_texture_reproduces_the_image(batch):
    generator, _, stack, texture, alpha = batch
    ndc = WeakPerspectiveCamera.from_tensor(stack["camera"]).transform(stack["vertices"])
    renderer = MeshRenderer(128)
    rendered = generator.template.render(renderer, ndc, texture)
    seen = generator.template.render(renderer, ndc, alpha.expand(-1, 3, -1, -1)).image[:, :1]
    inside = (seen > 0.99) & (stack["mask"] > 0.5)  # pixels drawn only from seen texels
    assert inside.float().mean() > 0.03
    error = (rendered.image - stack["image"]).abs().mean(1, keepdim=True)[inside]
    assert error.mean() < 0.05


def test_occluded_and_background_pixels_never_reach_the_texture(batch):
    generator, surface, stack, _, _ = batch
    mask = stack["mask"].clone()
    mask[..., :, :64] = 0  # hide the left half of every image
    texture, alpha = build_pseudogt_textures(stack["image"], mask, stack["camera"], stack["vertices"],
                                             generator.template, surface)
    ndc = WeakPerspectiveCamera.from_tensor(stack["camera"]).transform(stack["vertices"])
    points = surface.surface_points(ndc, generator.template.faces)
    seen = alpha.reshape(alpha.shape[0], -1)[:, surface.texel] > 0
    assert seen.any() and (points[..., 0][seen] > -0.02).all()


def test_uv_mirror_matches_mirroring_the_photo(batch):
    generator, surface, stack, texture, alpha = batch
    mirrored_camera = WeakPerspectiveCamera.from_tensor(stack["camera"]).mirrored().to_tensor()
    texture_m, alpha_m = build_pseudogt_textures(stack["image"].flip(-1), stack["mask"].flip(-1), mirrored_camera,
                                                 stack["vertices"], generator.template, surface)
    a, b = mirror_uv(alpha) > 0, alpha_m > 0
    assert (a & b).sum() / (a | b).sum() > 0.85
    both = (a & b).expand_as(texture)
    assert (mirror_uv(texture) - texture_m).abs()[both].mean() < 0.05


def test_mirror_uv_is_an_involution_that_keeps_symmetric_maps():
    x = torch.randn(3, 8, 16)
    assert torch.equal(mirror_uv(mirror_uv(x)), x)
    from meshinv.geometry.procedural import smooth_symmetric_map
    symmetric = smooth_symmetric_map(1, 3, 32)[0]
    assert torch.allclose(mirror_uv(symmetric), symmetric, atol=1e-6)


def test_build_folder_writes_loads_and_resumes(tmp_path, split):
    generator, dataset = split
    cfg = PseudoGTConfig(texture_size=TEXTURE, batch_size=4)
    report = build_pseudogt_folder(dataset, generator.template, cfg, tmp_path)
    assert report == {"written": 6, "kept": 0, "failed": {}}
    item = load_pseudogt(tmp_path / f"{dataset.image_ids()[0]}.npz")
    assert item["texture"].shape == (3, TEXTURE, TEXTURE) and item["mesh"].shape == (3, 32, 32)
    assert item["image_256"].shape == (3, 128, 128) and item["class_id"] >= 0
    assert torch.equal(item["image_256"][:, item["mask_256"][0] == 0], torch.full_like(item["image_256"][:, item["mask_256"][0] == 0], -1))
    again = build_pseudogt_folder(dataset, generator.template, cfg, tmp_path)
    assert again["kept"] == 6 and again["written"] == 0

    data = PseudoGTDataset(tmp_path, mirror=True)
    torch.manual_seed(0)
    flips = 0
    for _ in range(8):
        x = data[0]
        mirrored = not torch.equal(x["image_256"], item["image_256"])
        flips += mirrored
        if mirrored:
            assert torch.equal(x["texture"], mirror_uv(item["texture"]))
            assert torch.allclose(x["camera"], WeakPerspectiveCamera.from_tensor(item["camera"][None]).mirrored().to_tensor()[0])
    assert 0 < flips < 8


def test_bad_files_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, texture=np.zeros((3, 4, 4)))
    with pytest.raises(DataError, match="bad.npz.*convert"):
        load_pseudogt(bad)
    nan = tmp_path / "nan.npz"
    save_pseudogt(nan, texture=torch.full((3, 4, 4), float("nan")), texture_alpha=torch.ones(1, 4, 4),
                  mesh=torch.zeros(3, 32, 32), image_256=torch.zeros(3, 8, 8), mask_256=torch.ones(1, 8, 8),
                  camera=None, class_id=0, image_id="nan")
    with pytest.raises(DataError, match="nan.npz.*NaN"):
        load_pseudogt(nan)
    with pytest.raises(DataError, match="not found"):
        PseudoGTDataset(tmp_path / "absent")


def _convmesh_release(folder: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """ConvMesh's files: np.savez of one pickled dict of torch tensors; poses_metadata likewise."""
    src = folder / "pseudogt_8x8"
    src.mkdir()
    for index in range(2):
        image = torch.full((3, 16, 16), -1.0)
        image[:, 4:12, 4:12] = 0.5
        data = {"image": torch.rand(4, 16, 16), "image_256": image, "texture": torch.rand(3, 8, 8) * 2 - 1,
                "texture_alpha": torch.ones(1, 8, 8), "mesh": torch.randn(3, 32, 32) * 0.1}
        np.savez(src / f"{index}.npz", data=np.array(data, dtype=object))
    poses = {"path": ["a.jpg", "b.jpg"], "scale": torch.tensor([0.7, 0.8]), "translation": torch.zeros(2, 2),
             "rotation": torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])}
    np.savez(folder / "poses_metadata.npz", data=np.array(poses, dtype=object))
    return src, folder / "poses_metadata.npz"


def test_convmesh_release_is_converted_once(tmp_path):
    src, poses = _convmesh_release(tmp_path)
    count = convert_convmesh_pseudogt(src, tmp_path / "ours", poses, class_ids=[3, 5], trust_pickled_files=True)
    assert count == 2
    item = load_pseudogt(tmp_path / "ours" / "1.npz")
    assert item["class_id"] == 5 and torch.allclose(item["camera"], torch.tensor([0.8, 0, 0, 0, 1.0, 0, 0]))
    assert item["mask_256"].sum() == 64
    assert torch.equal(masked_image(item["image_256"], item["mask_256"]), item["image_256"])


class _TouchOnUnpickle:
    """A pickle that creates a file when loaded: what any code in a pickled file could do."""

    def __init__(self, path: pathlib.Path):
        self.path = path

    def __reduce__(self):
        return pathlib.Path.touch, (self.path,)


def test_convmesh_pickles_are_unpickled_only_when_trusted(tmp_path):
    src, _ = _convmesh_release(tmp_path)
    marker = tmp_path / "code_ran"
    np.savez(src / "2.npz", data=np.array({"image": _TouchOnUnpickle(marker)}, dtype=object))
    with pytest.raises(DataError, match="trust_pickled_files"):
        convert_convmesh_pseudogt(src, tmp_path / "ours", class_ids=[0, 0, 0])
    assert not marker.exists() and not (tmp_path / "ours").exists()

    def script(*extra):
        return subprocess.run([sys.executable, "scripts/build_pseudogt.py", "--config", "configs/synthetic.yaml",
                               "--convert-convmesh", str(src), "--out", str(tmp_path / "ours"), *extra],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)

    result = script()
    assert result.returncode == 1
    assert "--trust-pickled-files" in result.stderr and "unpickling runs whatever code they hold" in result.stderr
    assert not marker.exists() and not (tmp_path / "ours").exists()
    (src / "2.npz").unlink()
    result = script("--trust-pickled-files")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "ours").glob("*.npz")) == ["0.npz", "1.npz"]
