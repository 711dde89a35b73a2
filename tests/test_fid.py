"""FID_1 / FID_10 / FID_12 and the 3D IoU: the Frechet distance against pytorch-fid, the statistics
file format, the Inception loading (local file only, clear errors, the random opt-in), the novel-view
protocol checked against scipy rotations, the voxeliser on shapes with known volumes, and a results
folder evaluated end to end (tiny images, a small injected network or the random-Inception opt-in)."""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.spatial.transform import Rotation

from conftest import REPO_ROOT
from test_cub_p3d import p3d_root  # noqa: F401 -- a tiny PASCAL3D+ tree in the real formats
from meshinv.data.preprocess import CropConfig
from meshinv.data.synthetic import SyntheticDataset
from meshinv.datagen.synthetic import SyntheticConfig, SyntheticGenerator, write_split
from meshinv.evaluation import METRIC_INFO, METRICS, DatasetMetricEnv, EvaluationConfig, EvaluationContext
from meshinv.evaluation import fid as fidlib
from meshinv.evaluation.evaluate import run_evaluation
from meshinv.evaluation.fid.inception import _fid_inception
from meshinv.evaluation.report import EvaluationResult, report_markdown, write_outputs
from meshinv.evaluation.voxels import (
    cad_iou_3d, voxel_iou, voxelize_mesh, winding_numbers,
)
from meshinv.geometry import MeshTemplate, WeakPerspectiveCamera, euler_to_matrix
from meshinv.inversion.results import InversionRecord
from meshinv.render import MeshRenderer
from meshinv.utils import weights as weights_module
from meshinv.utils.frechet import PCAFrechet, frechet_distance, gaussian_statistics
from meshinv.utils.io import save_image
from meshinv.utils.weights import MissingWeightsError

SIZE = 64


class TinyFeatures(nn.Module):
    """A parameter-free stand-in for Inception: 4 x 4 average colours (48-d); records input sizes."""

    network = "tiny-test"

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[int, ...]] = []

    def forward(self, images):
        self.seen.append(tuple(images.shape))
        assert images.min() >= 0 and images.max() <= 1
        return F.adaptive_avg_pool2d(images, 4).flatten(1)


@pytest.fixture(scope="module")
def template():
    return MeshTemplate.uv_sphere()


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """No weight file anywhere: every search folder is an empty temporary one."""
    empty = tmp_path / "no_weights"
    empty.mkdir()
    monkeypatch.setattr(weights_module, "weight_search_dirs", lambda: [empty])
    return empty


# -- the Frechet distance and the statistics ---------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # scipy on pytorch-fid's sqrtm call
def test_frechet_distance_agrees_with_pytorch_fid():
    fid_score = pytest.importorskip("pytorch_fid.fid_score")
    rng = np.random.default_rng(0)
    cases = [(rng.normal(size=(60, 8)), rng.normal(0.3, 1.2, size=(70, 8))),          # N > D: scipy sqrtm
             (rng.normal(size=(10, 40)), rng.normal(0.2, 0.9, size=(14, 40)))]        # N < D: low-rank route
    for a, b in cases:
        sa, sb = fidlib.FIDStatistics.from_activations(a), fidlib.FIDStatistics.from_activations(b)
        expected = fid_score.calculate_frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)
        assert fidlib.fid(sa, sb) == pytest.approx(expected, rel=1e-5)
        assert fidlib.fid(sb, sa) == pytest.approx(expected, rel=1e-5)
        # one side read from a file (no factor) against the other from activations
        plain = fidlib.FIDStatistics(sb.mu, sb.sigma, sb.num_images)
        assert fidlib.fid(sa, plain) == pytest.approx(expected, rel=1e-5)
        assert frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma) == pytest.approx(expected, rel=1e-5)


def test_fid_of_a_set_with_itself_is_zero():
    rng = np.random.default_rng(1)
    for shape in ((50, 6), (9, 30)):
        stats = fidlib.FIDStatistics.from_activations(rng.normal(size=shape))
        assert abs(fidlib.fid(stats, stats)) < 1e-6
    with pytest.raises(ValueError, match="at least 2 images"):
        fidlib.FIDStatistics.from_activations(rng.normal(size=(1, 6)))


def test_one_frechet_mathematics_for_the_fids_and_pretraining():
    """meshinv.utils.frechet is what both the FIDs and pretraining's PCA signal compute with. Its
    low-rank route (a factor narrower than D) is the sqrtm route exactly; and with every PCA
    component kept, the projection is a translation and a rotation, under which the Frechet distance
    does not change, so PCAFrechet, fid() and frechet_distance() agree to float rounding."""
    import meshinv.evaluation.fid.statistics as fid_statistics
    import meshinv.training as training
    import meshinv.training.loop as loop

    assert fid_statistics.frechet_distance is frechet_distance and training.frechet_distance is frechet_distance
    assert loop.PCAFrechet is PCAFrechet and training.PCAFrechet is PCAFrechet
    rng = np.random.default_rng(4)
    small, other = rng.normal(size=(10, 40)), rng.normal(0.2, 0.9, size=(14, 40))   # N < D
    (mu_a, sigma_a, factor_a), (mu_b, sigma_b, factor_b) = gaussian_statistics(small), gaussian_statistics(other)
    np.testing.assert_allclose(sigma_a, np.cov(small, rowvar=False), rtol=1e-12, atol=1e-12)
    full = frechet_distance(mu_a, sigma_a, mu_b, sigma_b)
    assert frechet_distance(mu_a, sigma_a, mu_b, sigma_b, factor_a) == pytest.approx(full, rel=1e-6)
    assert frechet_distance(mu_a, sigma_a, mu_b, sigma_b, factor_a, factor_b) == pytest.approx(full, rel=1e-6)

    reference, samples = rng.normal(size=(60, 6)), rng.normal(0.3, 1.2, size=(50, 6))
    (mu_r, sigma_r, _), (mu_s, sigma_s, _) = gaussian_statistics(reference), gaussian_statistics(samples)
    expected = frechet_distance(mu_s, sigma_s, mu_r, sigma_r)
    assert PCAFrechet(torch.from_numpy(reference), components=6)(torch.from_numpy(samples)) == pytest.approx(
        expected, rel=1e-9)
    stats = [fidlib.FIDStatistics.from_activations(x) for x in (samples, reference)]
    assert fidlib.fid(*stats) == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="different sizes"):
        frechet_distance(mu_a, sigma_a, mu_r, sigma_r)


def test_statistics_file_round_trip_and_the_original_layout(tmp_path):
    rng = np.random.default_rng(2)
    stats = fidlib.FIDStatistics.from_activations(rng.normal(size=(40, 5)), network="fid", dataset="cub")
    stats.save(tmp_path / "ours.npz")
    back = fidlib.FIDStatistics.load(tmp_path / "ours.npz")
    np.testing.assert_allclose(back.mu, stats.mu)
    np.testing.assert_allclose(back.sigma, stats.sigma, rtol=1e-6, atol=1e-7)   # stored in float32
    assert np.array_equal(back.sigma, back.sigma.T) and back.num_images == 40 and back.resolution == 299
    assert back.info == {"network": "fid", "dataset": "cub"}

    # The original's file: a lower triangle in float32 and no record of the network (ConvMesh's).
    np.savez_compressed(tmp_path / "precomputed_fid_299x299_testval.npz", stats_m=stats.mu,
                        stats_s=np.tril(stats.sigma).astype(np.float32), num_images=40, resolution=299)
    original = fidlib.FIDStatistics.load(tmp_path / "precomputed_fid_299x299_testval.npz")
    full = np.tril(stats.sigma).astype(np.float32)
    np.testing.assert_array_equal(original.sigma, full + np.triu(full.T, 1))   # s + triu(s.T, 1)
    assert original.network == "torchvision"
    with pytest.raises(ValueError, match="network=torchvision"):
        fidlib.check_network(original, type("Net", (nn.Module,), {"network": "fid"})(), "the released file")

    np.savez(tmp_path / "other.npz", mu=stats.mu)
    with pytest.raises(ValueError, match="not an FID statistics file"):
        fidlib.FIDStatistics.load(tmp_path / "other.npz")


# -- the network ---------------------------------------------------------------------------------------------

def test_missing_weights_name_the_file_and_the_random_opt_in_warns(no_weights, caplog):
    pytest.importorskip("pytorch_fid")
    with pytest.raises(MissingWeightsError, match=r"pt_inception-2015-12-05-6726825d\.pth.*\n.*no_weights"):
        fidlib.build_inception("fid")
    with pytest.raises(MissingWeightsError, match=r"inception_v3_google-0cc3c7bd\.pth"):
        fidlib.build_inception("torchvision")
    with caplog.at_level(logging.WARNING, logger="meshinv.evaluation.fid"):
        net = fidlib.build_inception("fid", allow_random_weights=True)
    assert "RANDOM" in caplog.text and net.network == "fid:random-seed0"
    images = torch.rand(2, 3, 299, 299)
    with torch.no_grad():
        features = net(images)
    assert features.shape == (2, 2048) and torch.isfinite(features).all()
    assert not torch.allclose(features[0], features[1])
    again = fidlib.build_inception("fid", allow_random_weights=True)   # seeded: the same network
    with torch.no_grad():
        assert torch.equal(again(images), features)


def test_inception_loads_a_local_file_and_matches_pytorch_fid(tmp_path, monkeypatch, no_weights):
    """Our pool3 extractor, loaded from a local file, gives pytorch-fid's InceptionV3 features (same
    weights handed to pytorch-fid in place of its download)."""
    pf = pytest.importorskip("pytorch_fid.inception")
    random_net = fidlib.build_inception("fid", allow_random_weights=True)
    full = _fid_inception().state_dict()
    for key, value in random_net.state_dict().items():   # trunk.<i>.<rest> -> <Inception layer>.<rest>
        _, index, rest = key.split(".", 2)
        full[f"{fidlib.InceptionPool3.LAYERS[int(index)]}.{rest}"] = value
    path = tmp_path / fidlib.FID_INCEPTION_FILE
    torch.save(full, path)
    loaded = fidlib.build_inception("fid", weights=str(path))
    assert loaded.network == "fid"
    monkeypatch.setattr(pf, "load_state_dict_from_url", lambda url, **kwargs: torch.load(path, weights_only=True))
    reference = pf.InceptionV3([3], resize_input=False).eval()
    images = torch.rand(2, 3, 299, 299)
    with torch.no_grad():
        ours, theirs = loaded(images), reference(images)[0].flatten(1)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


# -- the protocol --------------------------------------------------------------------------------------------

def test_novel_views_follow_the_original_angles(template):
    """The 12 views: q = q_y(azimuth) * q_canonical with canonical Euler xyz (0, -90, 60), built here
    with scipy as the original does; centred, untranslated, scale 0.7, white background."""
    assert fidlib.FID12_AZIMUTHS == tuple(float(a) for a in range(0, 360, 30))
    assert fidlib.FID10_AZIMUTHS == tuple(a for a in fidlib.FID12_AZIMUTHS if a not in (90.0, 270.0))
    torch.manual_seed(0)
    vertices = template.vertices * torch.tensor([1.0, 0.6, 0.4]) + torch.tensor([0.3, -0.2, 0.1])  # off-centre
    texture = torch.rand(3, 16, 16) * 2 - 1
    views = fidlib.novel_view_images(template, vertices, texture, fidlib.FID12_AZIMUTHS, 48)
    assert views.shape == (12, 3, 48, 48) and views.min() >= 0 and views.max() <= 1
    canonical = Rotation.from_euler("xyz", [0, -90, 90 - 30], degrees=True)
    for k, azimuth in enumerate(fidlib.FID12_AZIMUTHS):
        x, y, z, w = (Rotation.from_euler("xyz", [0, azimuth, 0], degrees=True) * canonical).as_quat()
        camera = WeakPerspectiveCamera(torch.tensor([[0.7]]), torch.zeros(1, 2), torch.tensor([[w, x, y, z]]).float())
        ndc = camera.transform((vertices - vertices.mean(0))[None])
        out = template.render(MeshRenderer(48), ndc, texture[None], background=1.0)
        expected = (out.image[0] + 1) / 2
        assert (views[k] - expected).abs().max() < 1e-4, azimuth
        background = out.mask[0, 0] < 0.5
        assert background.any() and torch.all(views[k][:, background] == 1.0)   # white


def test_fid_metrics_pick_their_views_and_resize_to_299(template, tmp_path):
    net = TinyFeatures()
    cfg = EvaluationConfig(metrics=["fid_10", "fid_12"])
    cfg.fid.render_size = 32
    cfg.fid.batch_size = 5
    rng = np.random.default_rng(3)
    reference = fidlib.FIDStatistics.from_activations(rng.uniform(size=(30, 48)), network="tiny-test")
    env = DatasetMetricEnv(cfg, feature_extractor=net)
    env.cache["fid_reference"] = reference
    fid10, fid12 = METRICS["fid_10"](env), METRICS["fid_12"](env)
    assert fid10.views == [0, 1, 2, 4, 5, 6, 7, 8, 10, 11] and fid12.views == list(range(12))
    for i in range(3):
        record = InversionRecord(f"im{i}", torch.zeros(4), torch.tensor([0.6, 0, 0, 1.0, 0, 0, 0]),
                                 torch.zeros(7), -1, torch.rand(3, 8, 8) * 2 - 1, torch.zeros(3, 32, 32),
                                 template.vertices * (1 + 0.1 * i), SIZE, 1.0)
        ctx = EvaluationContext(record, template, MeshRenderer(SIZE), cfg)
        fid10.update(ctx)
        fid12.update(ctx)   # the views are rendered once and shared
    (v10, n10), (v12, n12) = fid10.compute(), fid12.compute()
    assert n10 == n12 == 3 and np.isfinite(v10) and np.isfinite(v12) and v10 != v12
    assert sum(shape[0] for shape in net.seen) == 36 and all(shape[2:] == (299, 299) for shape in net.seen)
    feats = np.concatenate([env.feature_bank().features(f"views/im{i}") for i in range(3)])
    assert v12 == pytest.approx(fidlib.fid(fidlib.FIDStatistics.from_activations(feats), reference))


# -- voxels and the 3D IoU -------------------------------------------------------------------------------------

def box_mesh(lo, hi):
    """A closed box (8 vertices, 12 outward triangles)."""
    lo, hi = torch.as_tensor(lo, dtype=torch.float64), torch.as_tensor(hi, dtype=torch.float64)
    corners = torch.tensor([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=torch.float64)
    vertices = lo + corners * (hi - lo)
    faces = torch.tensor([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                          [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    return vertices, faces


def test_voxeliser_on_a_cube_and_a_sphere(template):
    # A cube on voxel boundaries: exactly 20^3 of the 32^3 voxels (side 20/32), whatever the face orientation.
    vertices, faces = box_mesh([-0.3125] * 3, [0.3125] * 3)
    inside = winding_numbers(torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.1, -0.2], [0.4, 0.0, 0.0]]), vertices, faces)
    torch.testing.assert_close(inside.abs(), torch.tensor([1.0, 1.0, 0.0]), atol=1e-5, rtol=0)
    cube = voxelize_mesh(vertices, faces, 32)
    assert int(cube.sum()) == 20 ** 3 and cube[16, 16, 16] and not cube[0, 0, 0]
    assert torch.equal(voxelize_mesh(vertices, faces.flip(1), 32), cube)
    assert torch.equal(voxelize_mesh(vertices, faces, 32, method="ray"), cube)
    assert torch.equal(voxelize_mesh(vertices, faces.flip(1), 32, method="ray"), cube)
    assert voxel_iou(cube, cube) == 1.0
    # Shifted by 2 voxels along x: IoU = 18 / 22.
    shifted = voxelize_mesh(vertices + torch.tensor([0.0625, 0.0, 0.0], dtype=torch.float64), faces, 32)
    assert voxel_iou(cube, shifted) == pytest.approx(18 / 22)

    # The template sphere (radius 0.4): its volume, and agreement with the analytic ball.
    radius = 0.4
    sphere = voxelize_mesh(template.vertices.double() * radius, template.faces, 32, method="ray")
    assert torch.equal(voxelize_mesh(template.vertices.double() * radius, template.faces, 24),
                       voxelize_mesh(template.vertices.double() * radius, template.faces, 24, method="ray"))
    fraction = float(sphere.sum()) / 32 ** 3
    assert fraction == pytest.approx(4 / 3 * np.pi * radius ** 3, rel=0.04)
    axis = (torch.arange(32, dtype=torch.float64) + 0.5) / 32 - 0.5
    x, y, z = torch.meshgrid(axis, axis, axis, indexing="ij")
    assert voxel_iou(sphere, x ** 2 + y ** 2 + z ** 2 < radius ** 2) > 0.95


def test_iou_3d_aligns_by_bounding_box_in_one_frame(template):
    """A prediction that is the CAD model up to a scale and a shift (no rotation: both are in the frame
    of the dataset's cameras) scores 1; another shape scores less, and less again when turned."""
    pred = template.vertices.double() * torch.tensor([0.5, 1.0, 0.3], dtype=torch.float64)   # an elongated shape
    cad = 2.5 * pred + torch.tensor([0.2, -0.4, 0.1], dtype=torch.float64)
    assert cad_iou_3d(pred, template.faces, cad, template.faces, 16) == pytest.approx(1.0)
    box_v, box_f = box_mesh([-0.25, -0.5, -0.15], [0.25, 0.5, 0.15])
    box_voxels = voxelize_mesh(box_v / 1.0, box_f, 16)   # already in its normalised frame (longest side 1)
    value = cad_iou_3d(pred, template.faces, box_v, box_f, 16, box_voxels)
    assert 0.3 < value < 0.95
    # A wrong frame hurts: turned by the old default (-90, 0, 0), the long axis lands across the box.
    turned = pred @ euler_to_matrix(torch.tensor([-90.0, 0.0, 0.0], dtype=torch.float64), "xyz", degrees=True).T
    assert cad_iou_3d(turned, template.faces, box_v, box_f, 16, box_voxels) < value

    class CadDataset:
        def cad_mesh(self, index):
            assert index == 3
            return cad.float(), template.faces

    record = InversionRecord("car", torch.zeros(4), torch.zeros(7), torch.zeros(7), -1, torch.zeros(3, 8, 8),
                             torch.zeros(3, 32, 32), pred.float(), SIZE, 1.0)
    cfg = EvaluationConfig(voxel_resolution=16)
    ctx = EvaluationContext(record, template, MeshRenderer(SIZE), cfg, gt={"cad_index": torch.tensor(3)},
                            dataset=CadDataset())
    assert METRICS["iou_3d"](ctx) == pytest.approx(1.0)
    assert METRIC_INFO["iou_3d"].needs_cad and METRIC_INFO["fid_1"].level == "dataset"


# -- end to end -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """A synthetic split of 3 images at 64 x 64 and a results folder reproducing each image."""
    root = tmp_path_factory.mktemp("fid")
    cfg = SyntheticConfig(out_dir=str(root / "synthetic"), image_size=SIZE, texture_size=32, splits={"test": 3},
                          occluder_fraction=0.0, contact_sheet_rows=0)
    split = write_split(cfg, "test", 3, SyntheticGenerator(cfg))
    out = root / "results"
    for index, sample in enumerate(SyntheticDataset(split, CropConfig(img_size=SIZE, mask_threshold=0.95))):
        record = InversionRecord(sample.image_id, torch.zeros(8), sample.camera.clone(), sample.camera.clone(),
                                 sample.class_id, sample.gt["texture"], sample.gt["deformation_map"],
                                 sample.gt["vertices"], SIZE, 1.0)
        record.save(out / sample.image_id / "result.pt")
        save_image(out / sample.image_id / "input.png", ((sample.image + 1) / 2).permute(1, 2, 0).numpy())
        save_image(out / sample.image_id / "target_mask.png", sample.mask[0].numpy())
    return split, out


def small_fid_config(**overrides) -> EvaluationConfig:
    cfg = EvaluationConfig(metrics=["mask_iou", "fid_1", "fid_10", "fid_12"], grid_rows=0, **overrides)
    cfg.fid.render_size = 32
    cfg.fid.image_size = 64   # the tiny network does not care; keeps the reference crops small
    return cfg


def test_iou_3d_on_a_pascal3d_tree(p3d_root, template, tmp_path):  # noqa: F811
    """iou_3d reads each instance's CAD model through the dataset; other datasets skip it."""
    root, _, _ = p3d_root
    for image_id in ("2008_000002_1", "2008_000002_2"):
        InversionRecord(image_id, torch.zeros(4), torch.tensor([0.5, 0, 0, 1.0, 0, 0, 0]), torch.zeros(7), -1,
                        torch.zeros(3, 8, 8), torch.zeros(3, 32, 32), template.vertices * 0.5, 32, 1.0,
                        ).save(tmp_path / image_id / "result.pt")
    cfg = EvaluationConfig(metrics=["mask_iou", "iou_3d"], voxel_resolution=8, grid_rows=0)
    result = run_evaluation(tmp_path, root, template=template, cfg=cfg)
    assert result.dataset_kind == "p3d" and result.counts["iou_3d"] == 2 and not result.skipped
    assert all(0.0 <= v["iou_3d"] <= 1.0 for v in result.per_image.values())
    alone = run_evaluation(tmp_path, None, template=template, cfg=cfg)
    assert "no dataset" in alone.skipped["iou_3d"]


def test_evaluation_with_fid_metrics(results, template, tmp_path, no_weights, caplog):
    split, out = results
    cfg = small_fid_config()
    cfg.fid.stats_cache_dir = str(tmp_path / "cache")
    net = TinyFeatures()
    result = run_evaluation(out, split, template=template, cfg=cfg, feature_extractor=net)
    assert result.metrics == ["mask_iou", "fid_1", "fid_10", "fid_12"] and not result.skipped
    assert result.counts == {"mask_iou": 3, "fid_1": 3, "fid_10": 3, "fid_12": 3}
    assert all(np.isfinite(result.means[m]) and result.means[m] >= -1e-6 for m in ("fid_1", "fid_10", "fid_12"))
    assert set(result.per_image["test_00000"]) == {"mask_iou"}   # dataset-level values are not per image
    cached = list((tmp_path / "cache").glob("fid_reference_synthetic_*_64_tiny-test.npz"))
    assert len(cached) == 1 and fidlib.FIDStatistics.load(cached[0]).num_images == 3
    paths = write_outputs(result, tmp_path / "report", cfg)
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["dataset_level"] == ["fid_1", "fid_10", "fid_12"] and metrics["fid_network"] == "tiny-test"
    assert "| fid_12 |" in paths["report"].read_text() and "one value from all images" in paths["report"].read_text()

    # The cache is reused; an image without its input drops out of fid_1 only.
    (out / "test_00001" / "input.png").rename(tmp_path / "moved.png")
    try:
        with caplog.at_level(logging.INFO, logger="meshinv.evaluation.fid"):
            again = run_evaluation(out, None, template=template, cfg=dataclass_copy(cfg, reference_data=str(split)),
                                   feature_extractor=TinyFeatures())
    finally:
        (tmp_path / "moved.png").rename(out / "test_00001" / "input.png")
    assert "cached" in caplog.text
    assert again.counts["fid_1"] == 2 and "no input image" in again.metric_errors["test_00001"]["fid_1"]
    assert again.means["fid_12"] == pytest.approx(result.means["fid_12"], rel=1e-4)   # cached in float32

    # Without weights and without the opt-in, the FIDs are skipped with the file named; the rest runs.
    plain = run_evaluation(out, split, template=template, cfg=small_fid_config())
    assert plain.metrics == ["mask_iou"] and plain.counts["mask_iou"] == 3
    assert "pt_inception-2015-12-05-6726825d.pth" in plain.skipped["fid_1"]


def dataclass_copy(cfg: EvaluationConfig, **fid_changes) -> EvaluationConfig:
    new = copy.deepcopy(cfg)
    for key, value in fid_changes.items():
        setattr(new.fid, key, value)
    return new


def test_the_report_shows_no_column_of_paper_numbers():
    """No table of the paper's numbers: none could be checked against the paper's text from a source
    this project can cite, and an empty column is no result. The FID network note stays."""
    result = EvaluationResult("r", "d", ["mask_iou", "fid_1"], {}, {"mask_iou": 0.75, "fid_1": 30.0},
                              {"mask_iou": 2, "fid_1": 2}, {}, {}, {}, 2, dataset_kind="p3d", fid_network="fid")
    text = report_markdown(result, EvaluationConfig(), None)
    assert "| mask_iou | 0.7500 | 2 |" in text and "| fid_1 | 30.0000 | 2 |" in text
    assert "paper" not in text.lower() and "not verified" not in text
    assert "comparable with its numbers only when evaluation.fid.network is torchvision" in text


def test_evaluate_script_with_the_random_inception(results, tmp_path):
    """scripts/evaluate.py with evaluation.fid.allow_random_weights: a seeded random Inception (or the
    real one if this machine has its file)."""
    pytest.importorskip("pytorch_fid")
    split, out = results
    result = subprocess.run(
        [sys.executable, "scripts/evaluate.py", "--config", "configs/synthetic.yaml", "--results", str(out),
         "--data", str(split), "--set", "device=cpu", "--set", "evaluation.metrics=[mask_iou,fid_1,fid_12]",
         "--set", "evaluation.fid.allow_random_weights=true", "--set", "evaluation.fid.render_size=32",
         "--set", f"evaluation.fid.stats_cache_dir={tmp_path}", "--set", "evaluation.grid_rows=0"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["skipped"] == {} and metrics["counts"]["per_metric"]["fid_12"] == 3
    assert metrics["means"]["fid_1"] is not None and metrics["means"]["fid_12"] is not None
    assert metrics["fid_network"] in ("fid", "fid:random-seed0")
