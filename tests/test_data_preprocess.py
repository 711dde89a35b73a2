"""The sample format and CMR-style preprocessing: crops keep the camera consistent with the mask."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from meshinv.data.folder import FolderDataset, read_image
from meshinv.data.preprocess import (
    CropConfig, bbox_from_mask, crop_sample, crop_square, mirror_ndc_camera, pixel_camera_to_ndc_vertices,
    project_pixels, square_crop_box,
)
from meshinv.data.sample import DataError, PixelCamera
from meshinv.geometry import MeshTemplate, WeakPerspectiveCamera, euler_to_matrix, matrix_to_quaternion
from meshinv.geometry.procedural import smooth_symmetric_map
from meshinv.render import MeshRenderer


@pytest.fixture(scope="module")
def template():
    return MeshTemplate.uv_sphere()


def random_object(template, seed):
    """A mirror-symmetric deformed template and a pixel camera that puts it inside a 300 x 400 image."""
    g = torch.Generator().manual_seed(seed)
    vertices = template.vertex_positions(smooth_symmetric_map(1, 3, 32, 4, 0.2, g))[0]
    angles = (torch.rand(3, generator=g) * torch.tensor([60.0, 360.0, 30.0]) - torch.tensor([30.0, 0.0, 15.0]))
    quaternion = matrix_to_quaternion(euler_to_matrix(angles, "xyz", degrees=True))
    camera = PixelCamera(scale=float(60 + 30 * torch.rand(1, generator=g)),
                         translation=(float(150 + 100 * torch.rand(1, generator=g)), float(130 + 40 * torch.rand(1, generator=g))),
                         quaternion=tuple(quaternion.tolist()))
    return vertices, camera


def render_full_mask(template, vertices, camera, height=300, width=400):
    ndc = pixel_camera_to_ndc_vertices(vertices, camera, height, width)
    texture = torch.zeros(1, 3, 4, 4)
    return template.render(MeshRenderer((height, width)), ndc[None], texture).mask[0, 0].numpy()


def iou(a, b):
    a, b = a > 0.5, b > 0.5
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mirror", [False, True])
def test_crop_camera_projects_mesh_onto_cropped_mask(template, seed, mirror):
    vertices, camera = random_object(template, seed)
    mask = render_full_mask(template, vertices, camera)
    image = np.random.default_rng(seed).random((300, 400, 3)).astype(np.float32)
    cfg = CropConfig(img_size=128)
    _, mask_crop, camera_ndc, _ = crop_sample(image, mask, None, camera, cfg, mirror=mirror)
    rendered = template.render(MeshRenderer(128), WeakPerspectiveCamera.from_tensor(camera_ndc[None]).transform(vertices[None]),
                               torch.zeros(1, 3, 4, 4)).mask[0, 0]
    assert iou(rendered.numpy(), mask_crop[0].numpy()) >= 0.98
    # Sub-pixel consistency: a half-pixel convention slip (CMR's integer pixel centres) would move
    # the rendered silhouette by ~0.4 px here; IoU alone does not see that.
    assert np.abs(centroid(rendered.numpy()) - centroid(mask_crop[0].numpy())).max() < 0.15


def centroid(mask):
    rows, cols = np.nonzero(mask > 0.5)
    return np.array([cols.mean(), rows.mean()])


def test_pixel_projection_matches_renderer_convention(template):
    vertices, camera = random_object(template, 5)
    pixels = project_pixels(vertices, camera)
    ndc = pixel_camera_to_ndc_vertices(vertices, camera, 300, 400)
    torch.testing.assert_close(ndc[:, 0], 2 * pixels[:, 0] / 400 - 1)
    torch.testing.assert_close(ndc[:, 1], 1 - 2 * pixels[:, 1] / 300)


def test_bbox_and_square_box():
    mask = np.zeros((20, 30), bool)
    mask[5:9, 10:22] = True
    assert bbox_from_mask(mask) == (10.0, 5.0, 22.0, 9.0)
    left, top, side = square_crop_box((10, 5, 22, 9), padding=0.0)
    assert side == 12 and left == 10 and top + side / 2 == pytest.approx(7, abs=0.5)
    _, _, padded = square_crop_box((10, 5, 22, 9), padding=0.05)
    assert padded == 14  # 12 * 1.1 = 13.2, rounded up to whole pixels
    with pytest.raises(DataError, match="empty"):
        bbox_from_mask(np.zeros((4, 4), bool), "m.png")


def test_crop_beyond_the_image_is_filled():
    image = np.zeros((4, 4, 3), np.float32)
    out = crop_square(image, -2, -1, 8, fill=1.0)
    assert out.shape == (8, 8, 3)
    assert (out[1:5, 2:6] == 0).all() and out[0].min() == 1 and out[:, :2].min() == 1 and out[5:].min() == 1


def test_mirroring_twice_is_identity():
    camera = torch.tensor([0.5, 0.1, -0.2, 0.9, 0.1, 0.3, 0.2])
    torch.testing.assert_close(mirror_ndc_camera(mirror_ndc_camera(camera)), camera)


# -- the folder format ---------------------------------------------------------------------------

def write_folder(root, template):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    annotations = {}
    for k, mode in enumerate(["RGB", "L", "RGBA"]):
        vertices, camera = random_object(template, 10 + k)
        mask = render_full_mask(template, vertices, camera)
        image = (np.random.default_rng(k).random((300, 400, 3)) * 255).astype(np.uint8)
        suffix = ".jpg" if mode == "RGB" else ".png"
        Image.fromarray(image).convert(mode).save(root / "images" / f"img{k}{suffix}")
        Image.fromarray((mask * 255).astype(np.uint8)).save(root / "masks" / f"img{k}.png")
        annotations[f"img{k}"] = {"class_id": k, "camera": camera.to_dict()}
    (root / "annotations.json").write_text(json.dumps(annotations))
    return annotations


def test_folder_dataset_reads_every_image_kind(tmp_path, template):
    write_folder(tmp_path, template)
    dataset = FolderDataset(tmp_path, CropConfig(img_size=64), require_camera=True, require_class=True)
    assert len(dataset) == 3 and dataset.image_ids() == ["img0", "img1", "img2"]
    for k in range(3):
        sample = dataset[k]
        assert sample.image.shape == (3, 64, 64) and sample.mask.shape == (1, 64, 64)
        assert sample.image.min() >= -1 and sample.image.max() <= 1
        assert set(sample.mask.unique().tolist()) <= {0.0, 1.0} and sample.mask.mean() > 0.2
        assert sample.class_id == k and sample.camera.shape == (7,) and sample.image_id == f"img{k}"


def test_folder_dataset_errors_name_the_file(tmp_path, template):
    write_folder(tmp_path, template)
    (tmp_path / "images" / "img0.jpg").write_bytes(b"not an image")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "masks" / "img1.png")  # wrong size
    Image.fromarray(np.zeros((300, 400), np.uint8)).save(tmp_path / "masks" / "img2.png")  # empty
    dataset = FolderDataset(tmp_path, CropConfig(img_size=64))
    with pytest.raises(DataError, match="img0.jpg: cannot read image"):
        dataset[0]
    with pytest.raises(DataError, match="img1.png: mask is 10x10 but its image is 400x300"):
        dataset[1]
    with pytest.raises(DataError, match="img2.png: the mask is empty"):
        dataset[2]


def test_missing_required_annotation_and_mask(tmp_path, template):
    write_folder(tmp_path, template)
    annotations = json.loads((tmp_path / "annotations.json").read_text())
    del annotations["img1"]["camera"]
    (tmp_path / "annotations.json").write_text(json.dumps(annotations))
    (tmp_path / "masks" / "img2.png").unlink()
    dataset = FolderDataset(tmp_path, CropConfig(img_size=64), require_camera=True)
    with pytest.raises(DataError, match="'img1' has no 'camera'"):
        dataset[1]
    with pytest.raises(DataError, match="no mask at"):
        dataset[2]
    assert FolderDataset(tmp_path, CropConfig(img_size=64))[1].camera is None


def test_read_image_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_image(tmp_path / "nope.png")
