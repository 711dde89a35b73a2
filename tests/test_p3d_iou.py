"""The PASCAL3D+ 3D IoU end to end: a tiny car tree in CMR's own layout (cachedir/PASCAL3D+_release1.1/,
cachedir/p3d/data/, cachedir/p3d/sfm/), whose masks are its CAD models seen by its SfM cameras, read
by the real loader; result folders whose meshes are the CAD models in the frame of the loader's
cameras; and scripts/evaluate.py scoring them.

The CAD model is a stepped "car" (hood, cabin, trunk) built on the template's own topology, so that a
result can hold it exactly. Every face lies on a multiple of 1/32, i.e. between the centres of the
32^3 voxel grid, so voxel counts are exact: the car fills 3200 of the 4096 voxels of its box."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
import torch

from conftest import REPO_ROOT
from test_cub_p3d import save_png, struct_array
from meshinv.data.datasets import detect_kind, open_dataset
from meshinv.data.p3d import P3DDataset, p3d_paths
from meshinv.data.preprocess import CropConfig
from meshinv.evaluation import EvaluationConfig
from meshinv.evaluation.evaluate import run_evaluation
from meshinv.geometry import MeshTemplate, euler_to_matrix, quaternion_to_matrix
from meshinv.inversion.results import InversionRecord

SIZE = 64
RINGS, SEGMENTS = 7, 16          # a small UV sphere: 6 rings of 16 vertices, corners at 45 degrees
HALF_WIDTH = 8 / 32              # the car: 1 long (y), 0.5 wide (x), 0.25 high (z), its box centred at 0
# Stations along the length (y) of the 6 rings, each with its cross-section's z range: two rings at
# the same y make a vertical step (windscreen, rear window).
CAR_RINGS = [(16, -4, 0), (6, -4, 0), (6, -4, 4), (-8, -4, 4), (-8, -4, 2), (-16, -4, 2)]   # in 1/32
BOX_RINGS = [(16, -4, 4), (10, -4, 4), (4, -4, 4), (-4, -4, 4), (-10, -4, 4), (-16, -4, 4)]
CROP = CropConfig(img_size=SIZE, padding=0.05, mask_threshold=0.5)
# Image ids (voc_image_id _ voc_rec_id) and their 1-based cad_index.
INSTANCES = {"2009_000101_1": 1, "2009_000102_1": 1, "2009_000103_1": 1, "2009_000104_1": 2}
# Result ..103 is the car C_SCALE times larger and shifted by C_SHIFT (see the iou_3d_global check).
C_SCALE, C_SHIFT = 5.0, torch.tensor([5 / 32, 0.0, 0.0], dtype=torch.float64)


@pytest.fixture(scope="module")
def template():
    return MeshTemplate.uv_sphere(RINGS, SEGMENTS)


def ringed_shape(template: MeshTemplate, rings) -> torch.Tensor:
    """The template's vertices moved onto a solid whose cross-sections are rectangles: ring k (from the
    +y pole) goes onto rectangle x in +-HALF_WIDTH, z in rings[k][1:] (1/32 units) at y = rings[k][0]/32,
    each vertex by the direction of its angle about the y axis (the corners at 45 degrees are vertices,
    so each ring is exactly its rectangle); a pole goes to the middle of its ring's rectangle. Two rings
    at the same y close the step between them."""
    vertices = template.vertices.double()
    heights = sorted(set(vertices[:, 1].tolist()), reverse=True)   # pole, ring 1 .. ring R-1, pole
    assert len(heights) == len(rings) + 2
    out = torch.empty_like(vertices)
    for vertex, (x, y, z) in enumerate(vertices.tolist()):
        level = heights.index(y)
        y_station, z_lo, z_hi = rings[min(max(level - 1, 0), len(rings) - 1)]
        z_mid, z_half = (z_lo + z_hi) / 64, (z_hi - z_lo) / 64
        if level in (0, len(heights) - 1):
            out[vertex] = torch.tensor([0.0, y_station / 32, z_mid])
            continue
        # Radial projection of the unit circle onto the square [-1, 1]^2, then onto the rectangle.
        square = torch.tensor([x, z], dtype=torch.float64) / max(abs(x), abs(z))
        out[vertex] = torch.tensor([HALF_WIDTH * float(square[0]), y_station / 32, z_mid + z_half * float(square[1])])
    return out


def turned(vertices: torch.Tensor) -> torch.Tensor:
    """Turned 180 degrees about z (front to back)."""
    return vertices * vertices.new_tensor([-1.0, -1.0, 1.0])


SECOND_CAD_SCALE = 0.8    # the second CAD model: the car turned round and smaller (not normalised)


def inside_car(points: torch.Tensor, rings=CAR_RINGS) -> torch.Tensor:
    """(N,) bool: points (N, 3) inside the solid that ringed_shape(template, rings) bounds, analytically."""
    x, y, z = (points * 32).unbind(-1)
    inside = torch.zeros(points.shape[0], dtype=torch.bool)
    for (y0, lo0, hi0), (y1, lo1, hi1) in zip(rings[:-1], rings[1:]):
        if y0 != y1:   # a prism between two equal sections
            assert (lo0, hi0) == (lo1, hi1)
            inside |= (y < y0) & (y > y1) & (z > lo0) & (z < hi0)
    return inside & (x.abs() < HALF_WIDTH * 32)


def voxel_centres(resolution: int = 32) -> torch.Tensor:
    axis = (torch.arange(resolution, dtype=torch.float64) + 0.5) / resolution - 0.5
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)


def exact_iou(pred_inside, cad_inside) -> float:
    """IoU of two solids (point -> inside functions) over the voxel centres, checking that no centre
    lies within 1e-6 of either surface (so that any exact voxeliser must count the same)."""
    centres = voxel_centres()
    for inside in (pred_inside, cad_inside):
        value = inside(centres)
        for axis in range(3):
            for step in (-1e-6, 1e-6):
                nudged = centres.clone()
                nudged[:, axis] += step
                assert torch.equal(inside(nudged), value), "a voxel centre lies on a surface"
    a, b = pred_inside(centres), cad_inside(centres)
    return int((a & b).sum()) / int((a | b).sum())


def project(vertices: np.ndarray, scale: float, rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """CMR's SfM camera: (V, 2) 1-based pixel coordinates s * (rot v)[:2] + trans."""
    return scale * (vertices @ rot.T)[:, :2] + trans


def silhouette(points: np.ndarray, faces: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) bool: pixel centres (1-based (j + 1, i + 1)) inside any projected triangle."""
    cols, rows = np.meshgrid(np.arange(width) + 1.0, np.arange(height) + 1.0)
    p = np.stack([cols.ravel(), rows.ravel()], axis=1)[:, None, :]           # (P, 1, 2)
    a, b, c = (points[faces[:, k]][None] for k in range(3))                   # (1, F, 2)

    def cross(u, v, w):
        return (v[..., 0] - u[..., 0]) * (w[..., 1] - u[..., 1]) - (v[..., 1] - u[..., 1]) * (w[..., 0] - u[..., 0])

    d1, d2, d3 = cross(a, b, p), cross(b, c, p), cross(c, a, p)
    hit = ((d1 >= 0) & (d2 >= 0) & (d3 >= 0)) | ((d1 <= 0) & (d2 <= 0) & (d3 <= 0))
    area = np.abs(cross(a, b, c))
    return (hit & (area > 1e-12)).any(axis=1).reshape(height, width)


def view_rotation(azimuth: float, elevation: float) -> np.ndarray:
    """A car seen from the side, turned by azimuth about its up axis (z) and tilted by elevation:
    the rows are the image axes (x right, y down, depth) in CAD coordinates."""
    side = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])   # length across, up = image up
    turn = euler_to_matrix(torch.tensor([0.0, 0.0, azimuth], dtype=torch.float64), "xyz", degrees=True).numpy()
    tilt = euler_to_matrix(torch.tensor([elevation, 0.0, 0.0], dtype=torch.float64), "xyz", degrees=True).numpy()
    return tilt @ side @ turn


@pytest.fixture(scope="module")
def cmr_tree(tmp_path_factory, template):
    """CMR's cachedir: PASCAL3D+_release1.1/ (images, CAD/car.mat) and p3d/data, p3d/sfm (val split)."""
    root = tmp_path_factory.mktemp("cachedir")
    release = root / "PASCAL3D+_release1.1"
    car = ringed_shape(template, CAR_RINGS)
    cads = [car, SECOND_CAD_SCALE * turned(car)]
    faces = template.faces.numpy()
    (release / "CAD").mkdir(parents=True)
    scipy.io.savemat(release / "CAD" / "car.mat", {"car": struct_array(
        [{"vertices": v.numpy(), "faces": (faces + 1).astype(float)} for v in cads])})
    keypoints = car[[1, 1 + SEGMENTS // 2, len(car) - 2, len(car) - 2 - SEGMENTS // 2]].numpy()   # 4 ring points
    rng = np.random.default_rng(18)
    height, width = 100, 120
    records, sfms = [], []
    for image_id, cad_index in INSTANCES.items():
        rot = view_rotation(rng.uniform(0, 360), rng.uniform(5, 30))
        scale, trans = 80.0, np.array([60.0 + rng.uniform(-5, 5), 50.0 + rng.uniform(-5, 5)])
        points = project(cads[cad_index - 1].numpy(), scale, rot, trans)
        mask = silhouette(points, faces, height, width)
        image = np.full((height, width, 3), 0.8, np.float32)
        image[mask] = (0.7, 0.1, 0.1)
        voc_image_id = image_id.rsplit("_", 1)[0]
        rel_path = f"car_pascal\\{voc_image_id}.jpg"
        save_png(release / "Images" / "car_pascal" / f"{voc_image_id}.jpg", image)
        rows, cols = np.nonzero(mask)
        parts = np.vstack([project(keypoints, scale, rot, trans).T, np.ones(len(keypoints))])
        records.append({"rel_path": rel_path, "voc_image_id": voc_image_id, "voc_rec_id": 1.0,
                        "cad_index": float(cad_index), "is_train": 0.0, "mask": mask, "parts": parts,
                        "bbox": {"x1": cols.min() + 1.0, "y1": rows.min() + 1.0, "x2": cols.max() + 1.0,
                                 "y2": rows.max() + 1.0},
                        "width": float(width), "height": float(height)})
        sfms.append({"rot": rot, "scale": scale, "trans": trans[:, None]})
    for sub in ("data", "sfm"):
        (root / "p3d" / sub).mkdir(parents=True)
    scipy.io.savemat(root / "p3d" / "data" / "car_val.mat", {"images": struct_array(records)})
    scipy.io.savemat(root / "p3d" / "sfm" / "car_val.mat", {"sfm_anno": struct_array(sfms), "S": keypoints.T})
    return root


def test_cmr_and_convmesh_layouts_are_found(cmr_tree, tmp_path):
    assert p3d_paths(cmr_tree).cache_dir == cmr_tree / "p3d" and detect_kind(cmr_tree) == "p3d"
    dataset = open_dataset(cmr_tree, CROP)
    assert isinstance(dataset, P3DDataset) and dataset.image_ids() == list(INSTANCES)
    assert [int(s.gt["cad_index"]) for s in dataset] == [c - 1 for c in INSTANCES.values()]
    # MeshInversion's cache/ and ConvMesh's flat layout hold the same files one level up or down.
    for sub in ("cache", "."):
        root = tmp_path / sub.replace(".", "flat")
        shutil.copytree(cmr_tree / "PASCAL3D+_release1.1", root / "PASCAL3D+_release1.1")
        for part in ("data", "sfm"):
            shutil.copytree(cmr_tree / "p3d" / part, root / sub / part)
        assert p3d_paths(root).cache_dir == (root / sub if sub != "." else root)
        assert open_dataset(root, CROP).image_ids() == list(INSTANCES)


def write_results(out, dataset, template) -> None:
    """One result folder per instance (the format of meshinv/inversion/results.py), its mesh given
    in the frame of the loader's camera of the crop:
        ..101  the CAD model itself, with the loader's camera (a perfect reconstruction)
        ..102  the car's bounding box (a box on the template's topology), the same camera
        ..103  the CAD model 5 times larger and shifted, with the camera that shows it the same way
        ..104  the second CAD model (the car turned round, smaller), with its instance's camera"""
    car = ringed_shape(template, CAR_RINGS)
    meshes = {"2009_000101_1": car, "2009_000102_1": ringed_shape(template, BOX_RINGS),
              "2009_000103_1": C_SCALE * car + C_SHIFT, "2009_000104_1": SECOND_CAD_SCALE * turned(car)}
    for sample in dataset:
        camera = sample.camera.clone().double()
        if sample.image_id == "2009_000103_1":
            # R (s' (k v + d)) + t' = R (s v) + t in the image plane: s' = s / k, t' = t - s' (R d)[:2].
            camera[0] /= C_SCALE
            camera[1:3] -= camera[0] * (quaternion_to_matrix(camera[3:]) @ C_SHIFT)[:2]
        vertices = meshes[sample.image_id].float()
        InversionRecord(sample.image_id, torch.zeros(4), camera.float(), sample.camera.clone(), -1,
                        torch.zeros(3, 8, 8), torch.zeros(3, 32, 32), vertices, SIZE, 1.0,
                        ).save(out / sample.image_id / "result.pt")


def test_perfect_reconstruction_scores_one_through_evaluate_script(cmr_tree, template, tmp_path):
    """The CAD model in the frame of the loader's camera covers the instance's mask in the input view
    and scores iou_3d == 1; the box, a scaled and shifted copy and the second model score what their
    shapes give, voxel for voxel."""
    out = tmp_path / "results"
    write_results(out, open_dataset(cmr_tree, CROP), template)
    metrics = "[mask_iou, iou_3d, iou_3d_global]"
    result = subprocess.run(
        [sys.executable, "scripts/evaluate.py", "--config", "configs/p3d.yaml", "--results", str(out),
         "--data", str(cmr_tree), "--set", f"evaluation.metrics={metrics}", "--set", f"template.rings={RINGS}",
         "--set", f"template.segments={SEGMENTS}", "--set", f"evaluation.crop.mask_threshold={CROP.mask_threshold}",
         "--set", "evaluation.grid_rows=1", "--set", "device=cpu"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "metrics.json").read_text())
    assert report["dataset_kind"] == "p3d" and not report["failed"] and not report["metric_errors"]
    values = report["per_image"]
    box = lambda p: (p[:, 0].abs() < HALF_WIDTH) & (p[:, 1].abs() < 0.5) & (p[:, 2].abs() < 4 / 32)  # noqa: E731
    assert exact_iou(box, inside_car) == 3200 / 4096 == 25 / 32
    assert values["2009_000101_1"]["iou_3d"] == 1.0
    assert values["2009_000102_1"]["iou_3d"] == 25 / 32
    assert values["2009_000103_1"]["iou_3d"] == 1.0
    assert values["2009_000104_1"]["iou_3d"] == 1.0
    # The perfect reconstructions land on their masks in the input view (edge pixels aside: the mask
    # was drawn at the photo's resolution and resampled into the crop).
    for image_id in ("2009_000101_1", "2009_000103_1", "2009_000104_1"):
        assert values[image_id]["mask_iou"] > 0.9, image_id
    assert values["2009_000102_1"]["mask_iou"] < values["2009_000101_1"]["mask_iou"]
    # iou_3d_global: the CAD models as stored, one translation and scale, the means over the 4 images
    # (CMR's eval_mean_iou.m): translation -(centre of 103) / 4 = -C_SHIFT / 4, scale
    # (1 + 1 + 1 / 5 + 1) / 4 = 4 / 5 (every other prediction is its CAD model's size and place).
    translation, scale = -C_SHIFT / 4, (3 + 1 / C_SCALE) / 4

    def placed(inside, k=1.0, d=torch.zeros(3, dtype=torch.float64)):
        """The solid of a prediction k * shape + d after the global alignment, as a point test."""
        return lambda p: inside((p / scale - translation - d) / k)

    second_cad = lambda p: inside_car(turned(p) / SECOND_CAD_SCALE)  # noqa: E731
    expected = [exact_iou(placed(inside_car), inside_car), exact_iou(placed(box), inside_car),
                exact_iou(placed(inside_car, C_SCALE, C_SHIFT), inside_car),
                exact_iou(placed(second_cad), second_cad)]
    assert report["means"]["iou_3d_global"] == pytest.approx(sum(expected) / 4, abs=1e-12)
    assert report["means"]["iou_3d_global"] < report["means"]["iou_3d"]
    # Without a dataset of CAD models, both are skipped with the reason.
    alone = run_evaluation(out, None, template=template, cfg=EvaluationConfig(metrics=["iou_3d", "iou_3d_global"]))
    assert "no dataset" in alone.skipped["iou_3d"] and "no dataset" in alone.skipped["iou_3d_global"]
