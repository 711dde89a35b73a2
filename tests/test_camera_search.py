"""The camera search (meshinv/inversion/camera_search.py): a starting camera from the image alone."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT
from meshinv.geometry.camera import (WeakPerspectiveCamera, matrix_to_quaternion, quaternion_to_matrix,
                                     rotation_angle_deg)
from meshinv.geometry.template import MeshTemplate
from meshinv.inversion import Inverter
from meshinv.inversion.camera_search import (cameras_from_mask, depth_mirror, pick_distinct, refine_on_mask,
                                             rotation_grid)
from meshinv.inversion.config import CameraInitConfig, CameraSearchConfig
from meshinv.models.checkpoints import save_generator_checkpoint
from meshinv.utils.config import ConfigError, from_dict
from test_inversion import SIZE, split, stack, tiny_config, tiny_generator  # noqa: F401 -- fixtures

torch.set_default_dtype(torch.float32)


def random_rotations(count: int, seed: int = 0) -> torch.Tensor:
    q = torch.randn(count, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return quaternion_to_matrix(q / q.norm(dim=1, keepdim=True))


def symmetric_points(count: int = 60, seed: int = 1) -> torch.Tensor:
    """A point cloud mirror-symmetric about x = 0, not symmetric otherwise."""
    half = torch.rand(count, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    half = half * torch.tensor([0.6, 0.4, 1.0], dtype=torch.float64) + torch.tensor([0.05, 0.0, -0.5],
                                                                                  dtype=torch.float64)
    return torch.cat([half, half * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)])


def test_the_rotation_grid_is_proper_and_covers_the_rotations():
    grid = rotation_grid(24, 4)
    assert grid.shape == (96, 3, 3)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(grid @ grid.transpose(1, 2), eye.expand(96, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(grid), torch.ones(96, dtype=torch.float64), atol=1e-12)
    # 96 rotations spread over SO(3) (volume pi^2 in angle measure): any rotation lies within 60
    # degrees of one of them (a ball of radius 60 degrees holds ~20% of SO(3); a uniform grid of 96
    # has a covering radius near 40 degrees).
    grid_q = matrix_to_quaternion(grid)
    probes = matrix_to_quaternion(random_rotations(500))
    nearest = rotation_angle_deg(probes[:, None], grid_q[None]).min(dim=1).values
    assert nearest.max() < 60


def test_the_depth_mirror_has_the_same_silhouette_for_a_symmetric_shape():
    points = symmetric_points()[None]
    for rotation in random_rotations(5, seed=3):
        camera = torch.cat([torch.tensor([0.7, 0.1, -0.2], dtype=torch.float64), matrix_to_quaternion(rotation)])[None]
        twin = depth_mirror(camera)
        a = WeakPerspectiveCamera.from_tensor(camera).project(points)[0]
        b = WeakPerspectiveCamera.from_tensor(twin).project(points)[0]
        # The same projected point set (point i lands where its mirror partner did).
        assert (a[:, None] - b[None]).norm(dim=-1).min(dim=1).values.max() < 1e-12
        assert torch.allclose(torch.linalg.det(quaternion_to_matrix(twin[:, 3:])), torch.ones(1, dtype=torch.float64))
        assert rotation_angle_deg(twin[0, 3:], camera[0, 3:]) > 1  # a different pose
        assert rotation_angle_deg(depth_mirror(twin)[0, 3:], camera[0, 3:]) < 1e-6  # an involution


def test_mask_placement_matches_centroid_and_spread_exactly():
    shape = symmetric_points()[None]
    truth = torch.tensor([[0.8, 0.15, -0.1, *matrix_to_quaternion(random_rotations(1, seed=5)[0]).tolist()]],
                         dtype=torch.float64)
    projected = WeakPerspectiveCamera.from_tensor(truth).project(shape)        # the "mask" points
    valid = torch.ones(projected.shape[:2], dtype=torch.bool)
    placed = cameras_from_mask(quaternion_to_matrix(truth[:, 3:])[:, None], shape, projected, valid)[:, 0]
    assert torch.allclose(placed, truth, atol=1e-12)  # the true rotation gets the true scale and shift


def test_refinement_on_the_mask_closes_in_on_the_true_camera():
    shape = symmetric_points(seed=2)[None].expand(1, -1, -1)
    truth = torch.tensor([[0.8, 0.1, 0.05, *matrix_to_quaternion(random_rotations(1, seed=7)[0]).tolist()]],
                         dtype=torch.float64)
    target = WeakPerspectiveCamera.from_tensor(truth).project(shape)
    valid = torch.ones(target.shape[:2], dtype=torch.bool)
    turn = matrix_to_quaternion(random_rotations(1, seed=8)[0])  # a small turn: 12 degrees about its axis
    axis = turn[1:] / turn[1:].norm()
    small = torch.cat([torch.tensor([math.cos(math.radians(6))]), math.sin(math.radians(6)) * axis]).double()
    from meshinv.geometry.camera import quaternion_multiply
    start = truth.clone()
    start[0, 3:] = quaternion_multiply(small, truth[0, 3:])
    start[0, 0] *= 1.1
    _, start_loss = refine_on_mask(start, shape, target, valid, steps=0, lr=0.01)
    refined, loss = refine_on_mask(start, shape, target, valid, steps=150, lr=0.01)
    assert refine_on_mask(truth, shape, target, valid, steps=0, lr=0.01)[1].item() < 1e-24  # exact fit: 0
    assert loss.item() < 0.1 * start_loss.item()
    assert rotation_angle_deg(refined[0, 3:], truth[0, 3:]) < rotation_angle_deg(start[0, 3:], truth[0, 3:])


def test_distinct_picks_skip_near_duplicates_and_mirrors():
    base = matrix_to_quaternion(random_rotations(1, seed=9)[0])
    near = matrix_to_quaternion(quaternion_to_matrix(base) @ quaternion_to_matrix(
        torch.tensor([math.cos(math.radians(5)), math.sin(math.radians(5)), 0.0, 0.0], dtype=torch.float64)))
    far = matrix_to_quaternion(random_rotations(1, seed=10)[0])
    cameras = torch.stack([torch.cat([torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), q])
                           for q in (base, near, far)])
    cameras = torch.cat([cameras, depth_mirror(cameras[:1])])  # index 3: the mirror of 0
    losses = torch.tensor([0.1, 0.2, 0.4, 0.1], dtype=torch.float64)
    assert pick_distinct(cameras, losses, 2, 30).tolist() == [0, 2]
    assert pick_distinct(cameras, losses, 4, 30).tolist()[:2] == [0, 2]  # then the rest fill up


def test_the_search_keeps_a_start_camera_that_explains_the_image_exactly():
    """A target rendered from the prior (the first z candidate, the true camera): the true camera,
    given as the start, scores a loss no searched camera can beat, and is kept."""
    generator, template = tiny_generator(1), MeshTemplate.uv_sphere()
    cfg = tiny_config()
    cfg.loss.feature_weight = 0.0
    cfg.camera_init = CameraInitConfig(search=CameraSearchConfig(enabled=True, views=6, rolls=2, steps=3, keep=1,
                                                                 score_candidates=2, mask_size=16))
    inverter = Inverter(generator, template, cfg)
    z0 = torch.randn(cfg.select_num, generator.latent_dim, generator=torch.Generator().manual_seed(cfg.seed))[:1]
    truth = torch.tensor([[0.7, 0.05, -0.05, *matrix_to_quaternion(random_rotations(1, seed=11)[0]).tolist()]])
    with torch.no_grad():
        texture, mesh_map = generator(z0, torch.tensor([0]))
        out = inverter.objective(z0, texture, mesh_map, truth, inverter.objective.prepare(
            torch.zeros(1, 3, SIZE, SIZE), torch.ones(1, 1, SIZE, SIZE)))
    image, mask = out.render.image, (out.render.mask > 0.5).float()
    found = inverter.search_cameras(image, mask, torch.tensor([0]), ["rendered"], truth, ["given"])
    assert found.sources == ["given+search: kept the start"]
    assert torch.equal(found.cameras, truth)
    assert found.scores[0] == found.start_scores[0]
    # Without a start the search still gives a usable camera and says where it came from.
    alone = inverter.search_cameras(image, mask, torch.tensor([0]), ["rendered"])
    assert alone.sources[0].startswith("search") and torch.isfinite(alone.cameras).all()
    assert alone.scores[0] >= found.scores[0]


def test_search_settings_are_checked():
    from meshinv.config import ExperimentConfig
    from meshinv.utils.config import validate_config

    cfg = from_dict(ExperimentConfig, {"inversion": {"camera_init": {"search": {"enabled": True, "views": 0}}}})
    with pytest.raises(ConfigError, match=r"inversion\.camera_init\.search\.views must be >= 1, got 0"):
        validate_config(cfg)


def test_invert_script_without_any_camera_searches_and_records_it(split, tmp_path):  # noqa: F811
    checkpoint = tmp_path / "prior.pt"
    save_generator_checkpoint(checkpoint, tiny_generator())
    common = [sys.executable, "scripts/invert.py", "--config", "configs/synthetic.yaml", "--data", str(split),
              "--checkpoint", str(checkpoint), "--set", "device=cpu", "--set", "model.latent_dim=8",
              "--set", f"inversion.crop.img_size={SIZE}", "--set", "inversion.select_num=4",
              "--set", "inversion.batch_size=2", "--set", "inversion.limit=2",
              "--set", "inversion.export.turntable_frames=0", "--set", "inversion.iterations=[2]",
              "--set", "inversion.z_lrs=[0.1]", "--set", "inversion.camera_lrs=[0.01]",
              "--set", "inversion.camera_init.use_dataset_camera=false", "--set", "inversion.camera_init.predictor=null",
              "--set", "inversion.camera_init.noise_rotation_deg=0"]
    search = ["--set", "inversion.camera_init.search.enabled=true", "--set", "inversion.camera_init.search.views=4",
              "--set", "inversion.camera_init.search.rolls=2", "--set", "inversion.camera_init.search.steps=2",
              "--set", "inversion.camera_init.search.score_candidates=2"]
    result = subprocess.run(common + ["--out", str(tmp_path / "searched")] + search, cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "searched" / "summary.json").read_text())
    assert summary["done"] == 2
    for entry in summary["images"].values():
        assert entry["camera_init"].startswith("search") and math.isfinite(entry["camera_init_score"])
    # No dataset camera and no search: each image fails, saying why.
    result = subprocess.run(common + ["--out", str(tmp_path / "none")], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=300)
    summary = json.loads((tmp_path / "none" / "summary.json").read_text())
    assert summary["done"] == 0 and summary["failed"] == 2
    assert all("use_dataset_camera is false" in e["reason"] for e in summary["images"].values())
