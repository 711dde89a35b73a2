"""Evaluation: the metric registry, each metric on records with known answers, the folder-level
evaluation with bad inputs, and scripts/evaluate.py end to end (tiny images)."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from conftest import CUDA_DEVICE, REPO_ROOT, requires_cuda
from meshinv.data.folder import FolderDataset
from meshinv.data.info import DatasetInfo
from meshinv.data.preprocess import CropConfig, square_crop_box
from meshinv.data.synthetic import SyntheticDataset
from meshinv.datagen.synthetic import SyntheticConfig, SyntheticGenerator, write_split
from meshinv.evaluation import (
    METRIC_INFO, METRICS, EvaluationConfig, EvaluationContext, MissingInputError, get_metric, iou, register_metric,
    weak_perspective_chamfer,
)
from meshinv.evaluation.crops import inversion_crop
from meshinv.evaluation.distribution import distribution
from meshinv.evaluation.evaluate import evaluate_results, run_evaluation
from meshinv.evaluation.inversion_facts import record_facts
from meshinv.evaluation.metrics import PSNR_CEILING_DB
from meshinv.evaluation.report import write_outputs
from meshinv.evaluation.samples import metric_unavailable
from meshinv.geometry import MeshTemplate, quaternion_multiply, quaternion_to_matrix
from meshinv.inversion.results import InversionRecord, load_record
from meshinv.render import MeshRenderer
from meshinv.utils.config import to_dict
from meshinv.utils.io import save_image

SIZE = 64
SMALL_EVAL = dict(novel_view_size=48, grid_image_size=32, grid_rows=2)


@pytest.fixture(scope="module")
def template():
    return MeshTemplate.uv_sphere()


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """Three unoccluded synthetic test images at 64 x 64 with their ground truth."""
    cfg = SyntheticConfig(out_dir=str(tmp_path_factory.mktemp("synthetic")), image_size=SIZE, texture_size=32,
                          splits={"test": 3}, occluder_fraction=0.0, contact_sheet_rows=0)
    return write_split(cfg, "test", 3, SyntheticGenerator(cfg))


def exact_size(split, image_id: str) -> int:
    """The crop side of an image: cropping at this size resamples nothing, so masks stay exact."""
    bbox = json.loads((split / "annotations.json").read_text())[image_id]["bbox"]
    return square_crop_box(bbox, CropConfig().padding)[2]


def sample_at(split, index: int, size: int):
    return SyntheticDataset(split, CropConfig(img_size=size, mask_threshold=0.95))[index]


def record_for(sample, size: int, camera=None, vertices=None) -> InversionRecord:
    """A record that reproduces the sample exactly unless `camera` / `vertices` say otherwise."""
    return InversionRecord(
        image_id=sample.image_id, z=torch.zeros(8), camera=sample.camera.clone() if camera is None else camera,
        camera_init=sample.camera.clone(), class_id=sample.class_id, texture=sample.gt["texture"],
        mesh_map=sample.gt["deformation_map"], vertices=sample.gt["vertices"] if vertices is None else vertices,
        image_size=size, iou=float("nan"),
    )


def context(template, record, target_mask=None, gt=None, gt_camera=None) -> EvaluationContext:
    return EvaluationContext(record, template, MeshRenderer(record.image_size), EvaluationConfig(**SMALL_EVAL),
                             target_mask=target_mask, gt=gt or {}, gt_camera=gt_camera)


# -- registry ----------------------------------------------------------------------------------------------

def test_registry_knows_the_metrics_and_names_them_on_a_typo():
    assert {"mask_iou", "full_mask_iou", "novel_view_iou", "chamfer_3d", "rotation_error_deg"} <= set(METRICS)
    assert get_metric("mask_iou") is METRICS["mask_iou"]
    with pytest.raises(ValueError, match=r"unknown metric 'mask_io'; known metrics: .*chamfer_3d.*mask_iou"):
        get_metric("mask_io")
    with pytest.raises(ValueError, match="already registered"):
        register_metric("mask_iou")(lambda ctx: 0.0)


# -- metrics with known answers -----------------------------------------------------------------------------

def test_perfect_record_scores_perfectly(split, template):
    for index, image_id in enumerate(["test_00000", "test_00001"]):
        size = exact_size(split, image_id)
        sample = sample_at(split, index, size)
        assert sample.image_id == image_id and not bool(sample.gt["occluded"])
        ctx = context(template, record_for(sample, size), sample.mask, sample.gt, sample.camera)
        assert METRICS["mask_iou"](ctx) > 0.99
        assert METRICS["full_mask_iou"](ctx) > 0.99
        assert METRICS["novel_view_iou"](ctx) == 1.0
        assert METRICS["chamfer_3d"](ctx) < 1e-5


def circle_lens_iou(distance: float, radius: float) -> float:
    """IoU of two equal discs whose centres are `distance` apart."""
    half = distance / (2 * radius)
    overlap = 2 * radius ** 2 * math.acos(half) - distance / 2 * math.sqrt(4 * radius ** 2 - distance ** 2)
    return overlap / (2 * math.pi * radius ** 2 - overlap)


def test_scaled_or_shifted_camera_gives_the_expected_iou(template):
    """The undeformed sphere's silhouette is a disc of radius s (NDC): a camera scaled by k has IoU
    k^2 with it, a shifted one the IoU of two overlapping discs."""
    sphere = template.vertices.clone()
    unit_q = [1.0, 0.0, 0.0, 0.0]
    camera = torch.tensor([0.6, 0.0, 0.0] + unit_q)
    target = context(template, InversionRecord("s", torch.zeros(1), camera, camera, -1, torch.zeros(3, 8, 8),
                                               torch.zeros(3, 32, 32), sphere, SIZE, 1.0)).pred_mask()
    cases = [(torch.tensor([0.48, 0.0, 0.0] + unit_q), 0.8 ** 2),
             (torch.tensor([0.6, 0.3, 0.0] + unit_q), circle_lens_iou(0.3, 0.6)),
             (torch.tensor([0.6, 0.0, -0.6] + unit_q), circle_lens_iou(0.6, 0.6))]
    for moved, expected in cases:
        record = InversionRecord("s", torch.zeros(1), moved, camera, -1, torch.zeros(3, 8, 8),
                                 torch.zeros(3, 32, 32), sphere, SIZE, 1.0)
        assert METRICS["mask_iou"](context(template, record, target_mask=target)) == pytest.approx(expected, abs=0.03)
    # Novel views are at a fixed scale: a sphere shrunk by 0.8 covers 0.64 of the true one in every view.
    record = InversionRecord("s", torch.zeros(1), camera, camera, -1, torch.zeros(3, 8, 8), torch.zeros(3, 32, 32),
                             0.8 * sphere, SIZE, 1.0)
    value = METRICS["novel_view_iou"](context(template, record, gt={"vertices": sphere}))
    assert value == pytest.approx(0.64, abs=0.03)


def test_iou_edge_cases():
    a = torch.zeros(2, 4, 4, dtype=torch.bool)
    b = a.clone()
    b[1, :2] = True
    a[1, :1] = True
    assert iou(a, b).tolist() == [1.0, 0.5]  # two empty masks agree
    assert iou(a.float() * 0.9, b.float()).tolist() == [1.0, 0.5]  # numeric masks count above 0.5
    assert iou(a.float() * 0.4, b.float()).tolist() == [1.0, 0.0]


def test_every_stage_uses_the_one_mask_iou():
    import meshinv.inversion.engine as engine
    import meshinv.training.camera.overlay as camera
    from meshinv.utils.masks import mask_iou

    assert iou is mask_iou and engine.mask_iou is mask_iou and camera.mask_iou is mask_iou


def test_chamfer_3d_invariances(split):
    sample = sample_at(split, 0, SIZE)
    vertices, camera = sample.gt["vertices"], sample.camera
    assert weak_perspective_chamfer(vertices, camera, vertices, camera) < 1e-6
    # A shift along the viewing direction (unobservable under weak perspective) changes nothing.
    rotation = quaternion_to_matrix(camera[3:])
    depth_shift = rotation.T @ torch.tensor([0.0, 0.0, 0.7]) / camera[0]
    assert weak_perspective_chamfer(vertices + depth_shift, camera, vertices, camera) < 1e-5
    # Neither does a bigger object seen by a camera of smaller scale.
    smaller = camera.clone()
    smaller[0] /= 1.5
    assert weak_perspective_chamfer(1.5 * vertices, smaller, vertices, camera) < 1e-5
    # The same error seen in a crop twice as large (scale and translation of both cameras doubled,
    # i.e. about the crop centre) is the same number: units are GT object units.
    shifted = camera.clone()
    shifted[1] += 0.1
    value = weak_perspective_chamfer(vertices, shifted, vertices, camera)
    assert 0 < value <= 0.1 / float(camera[0]) + 1e-6
    doubled = lambda c: torch.cat([c[:3] * 2, c[3:]])  # noqa: E731
    assert weak_perspective_chamfer(vertices, doubled(shifted), vertices, doubled(camera)) == pytest.approx(value)
    # An in-plane shift is not free: a larger one costs more, never more than the shift itself.
    far = camera.clone()
    far[1] += 5.0
    assert value < weak_perspective_chamfer(vertices, far, vertices, camera) <= 5.0 / float(camera[0])


def test_missing_inputs_are_clear_errors(split, template):
    sample = sample_at(split, 0, SIZE)
    ctx = context(template, record_for(sample, SIZE))
    with pytest.raises(MissingInputError, match="no target mask"):
        METRICS["mask_iou"](ctx)
    with pytest.raises(MissingInputError, match=r"gt\['full_mask'\]"):
        METRICS["full_mask_iou"](ctx)
    wrong_size = context(template, record_for(sample, SIZE), target_mask=torch.ones(1, 32, 32))
    with pytest.raises(ValueError, match=r"\(32, 32\), expected \(64, 64\)"):
        METRICS["mask_iou"](wrong_size)


def turned(camera: torch.Tensor, degrees: float, axis, object_side: bool = False) -> torch.Tensor:
    """The float64 camera with its rotation turned by `degrees` about `axis`, applied in camera space
    (before the rotation when object_side)."""
    camera = camera.double()
    axis = torch.tensor(axis, dtype=torch.float64)
    half = math.radians(degrees) / 2
    turn = torch.cat([torch.tensor([math.cos(half)], dtype=torch.float64), math.sin(half) * axis / axis.norm()])
    q = quaternion_multiply(camera[3:], turn) if object_side else quaternion_multiply(turn, camera[3:])
    return torch.cat([camera[:3], q])


def test_rotation_error_is_the_angle_between_final_and_ground_truth_rotations(split, template):
    """0 for the GT camera (or its -q), exactly the turn for a camera turned by a known angle about any
    axis, on either side of the rotation (float64 throughout: equal to 1e-6 degrees)."""
    sample = sample_at(split, 0, SIZE)
    gt = sample.camera.double()

    def error(camera) -> float:
        return METRICS["rotation_error_deg"](context(template, record_for(sample, SIZE, camera=camera), gt_camera=gt))

    assert error(gt) == 0.0
    assert error(torch.cat([gt[:3], -gt[3:]])) == pytest.approx(0.0, abs=1e-6)
    for degrees in (30.0, 1e-3, 150.0, 180.0):
        for axis in ([0.0, 1.0, 0.0], [1.0, -2.0, 0.5]):
            for object_side in (False, True):
                assert error(turned(gt, degrees, axis, object_side)) == pytest.approx(degrees, abs=1e-6)
    # A turn past 180 degrees is the shorter one the other way; scale and translation do not count.
    assert error(turned(gt, 200.0, [0.0, 0.0, 1.0])) == pytest.approx(160.0, abs=1e-6)
    moved = turned(gt, 30.0, [1.0, 0.0, 0.0]) * torch.tensor([1.5, 1, 1, 1, 1, 1, 1], dtype=torch.float64)
    moved[1:3] += 0.3
    assert error(moved) == pytest.approx(30.0, abs=1e-6)
    with pytest.raises(MissingInputError, match="rotation_error_deg: needs the sample's camera"):
        METRICS["rotation_error_deg"](context(template, record_for(sample, SIZE)))
    # It runs on any dataset whose samples carry cameras, and is skipped, with the reason, on others.
    cameras = DatasetInfo("folder", has_cameras=True, has_3d_ground_truth=False, has_cad_models=False)
    assert metric_unavailable("rotation_error_deg", SimpleNamespace(info=cameras), "d") is None
    no_cameras = SimpleNamespace(info=dataclasses.replace(cameras, has_cameras=False))
    assert metric_unavailable("rotation_error_deg", no_cameras, "d") == "the dataset d has no cameras"


def test_distribution_uses_linear_percentiles():
    """median and p95 are torch.quantile's linear interpolation: position p (n - 1) in the sorted values."""
    rotation = METRIC_INFO["rotation_error_deg"]
    assert distribution([float(v) for v in range(20, -1, -1)], rotation) == {
        "median": 10.0, "p95": 19.0, "within_30deg": 1.0}   # positions 10 and 19 of 0..20
    # Even count: the median is the mean of the middle two; p95 at position 2.85 of (1, 2, 4, 10).
    expected = {"median": 3.0, "p95": 4 + 0.85 * 6}
    assert distribution([10.0, 1.0, 4.0, 2.0], METRIC_INFO["mask_iou"]) == pytest.approx(expected)
    # Within 30 degrees counts 30 itself.
    assert distribution([10.0, 30.0, 30.5, 179.0], rotation)["within_30deg"] == 0.5
    assert distribution([], rotation) == {}


def test_report_gives_the_rotation_error_distribution(split, template, tmp_path):
    """Results turned by 0, 20 and 90 degrees: metrics.json and report.md give their median, p95 and
    the fraction within 30 degrees."""
    for index, degrees in enumerate([20.0, 0.0, 90.0]):
        sample = sample_at(split, index, SIZE)
        camera = turned(sample.camera, degrees, [0.3, 1.0, 0.2])
        record_for(sample, SIZE, camera=camera).save(tmp_path / sample.image_id / "result.pt")
    cfg = EvaluationConfig(metrics=["mask_iou", "rotation_error_deg"], grid_rows=0)
    result = run_evaluation(tmp_path, split, template=template, cfg=cfg)
    # Saved in float32: the angles are right to float32's precision of the quaternions.
    assert result.means["rotation_error_deg"] == pytest.approx(110.0 / 3, abs=1e-3)
    expected = {"median": 20.0, "p95": 20.0 + 0.9 * 70.0, "within_30deg": 2 / 3}   # p95 at position 1.9
    assert result.distribution["rotation_error_deg"] == pytest.approx(expected, abs=1e-3)
    paths = write_outputs(result, tmp_path)
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["distribution"]["rotation_error_deg"] == pytest.approx(expected, abs=1e-3)
    assert "linear" in metrics["percentiles"]
    report = paths["report"].read_text()
    assert "| rotation_error_deg | 36.6667 | 3 | 20.0000 | 83.0000 | lower |" in report
    assert "rotation_error_deg: 66.7% of 3 images at most 30 deg." in report
    assert "torch.quantile, linear interpolation" in report


def test_report_states_where_the_starting_cameras_came_from(split, template, tmp_path):
    """Each result's camera source is counted, a start from the dataset's camera is warned about, and
    the time per image is the mean of the recorded ones."""
    write_results(split, tmp_path)
    for image_id, source, seconds in (("test_00000", "predictor", 2.0), ("test_00001", "dataset+noise", float("nan"))):
        record = load_record(tmp_path / image_id)
        dataclasses.replace(record, camera_source=source, seconds=seconds).save(tmp_path / image_id / "result.pt")
    cfg = EvaluationConfig(metrics=["mask_iou"], grid_rows=0)
    paths = write_outputs(run_evaluation(tmp_path, None, template=template, cfg=cfg), tmp_path / "mixed")
    inversion = json.loads(paths["metrics"].read_text())["inversion"]
    assert inversion["camera_sources"] == {"dataset+noise": 1, "predictor": 1}
    assert inversion["from_dataset_camera"] == 1
    assert inversion["seconds_per_image"] == 2.0 and inversion["timed_images"] == 1
    assert inversion["per_image"]["test_00001"] == {"camera_source": "dataset+noise", "seconds": None}
    report = paths["report"].read_text()
    assert "Starting cameras: dataset+noise 1, predictor 1." in report
    assert ("1 of 2 results started from the dataset's camera (ground truth on synthetic data), not from the "
            "image alone.") in report
    assert "Inversion time: 2.00 s per image (mean over the 1 results that record it)." in report

    # Every start from the image: no warning.
    record = load_record(tmp_path / "test_00001")
    dataclasses.replace(record, camera_source="predictor", seconds=4.0).save(tmp_path / "test_00001" / "result.pt")
    paths = write_outputs(run_evaluation(tmp_path, None, template=template, cfg=cfg), tmp_path / "predictor")
    report = paths["report"].read_text()
    assert "Starting cameras: predictor 2." in report and "dataset's camera" not in report
    assert "Inversion time: 3.00 s per image" in report

    # Sources are plain strings (newer ones too); a recorded score is kept, a missing one is absent.
    newer = record_facts(dataclasses.make_dataclass("R", ["camera_source", "seconds", "camera_init_score"])(
        "search", 1.5, 0.25))
    assert newer == {"camera_source": "search", "seconds": 1.5, "camera_init_score": 0.25}
    assert record_facts(record_for(sample_at(split, 0, SIZE), SIZE)) == {"camera_source": "unrecorded",
                                                                         "seconds": None}


# -- folders ----------------------------------------------------------------------------------------------

def write_results(split, out):
    """A results folder: a perfect record (at the exact crop size, with its images), a record with a
    shifted camera at 48 x 48 (no target_mask.png: the dataset's mask is used), a damaged result.pt and
    a folder whose inversion did not finish."""
    size = exact_size(split, "test_00000")
    perfect = sample_at(split, 0, size)
    record_for(perfect, size).save(out / "test_00000" / "result.pt")
    image = ((perfect.image + 1) / 2).permute(1, 2, 0).numpy()
    save_image(out / "test_00000" / "input.png", image)
    save_image(out / "test_00000" / "render.png", image)
    save_image(out / "test_00000" / "target_mask.png", perfect.mask[0].numpy())
    other = sample_at(split, 1, 48)
    camera = other.camera.clone()
    camera[1] += 0.2
    record_for(other, 48, camera=camera).save(out / "test_00001" / "result.pt")
    (out / "test_00002").mkdir()
    (out / "test_00002" / "result.pt").write_bytes(b"not a torch file")
    save_image(out / "unfinished" / "input.png", image)


def test_evaluation_of_a_folder_records_failures_and_skips_without_ground_truth(split, template, tmp_path):
    write_results(split, tmp_path)
    cfg = EvaluationConfig(**SMALL_EVAL)
    result = run_evaluation(tmp_path, split, template=template, cfg=cfg)
    assert sorted(result.per_image) == ["test_00000", "test_00001"]
    assert sorted(result.failed) == ["test_00002", "unfinished"]
    assert "no inversion result" in result.failed["unfinished"]
    perfect, shifted = result.per_image["test_00000"], result.per_image["test_00001"]
    assert perfect["mask_iou"] > 0.99 and perfect["chamfer_3d"] < 1e-5 and perfect["novel_view_iou"] == 1.0
    assert shifted["mask_iou"] < 0.95 and shifted["chamfer_3d"] > 0.01 and shifted["novel_view_iou"] == 1.0
    assert perfect["rotation_error_deg"] == 0.0 and shifted["rotation_error_deg"] == 0.0   # only shifted
    assert result.means["mask_iou"] == pytest.approx((perfect["mask_iou"] + shifted["mask_iou"]) / 2)
    assert result.counts == {name: 2 for name in cfg.metrics} and not result.skipped

    # No dataset, or one without ground truth: the GT metrics are skipped, mask_iou still runs where
    # the folder has its target mask.
    alone = run_evaluation(tmp_path, None, template=template, cfg=cfg)
    assert alone.metrics == ["mask_iou"] and set(alone.skipped) == {"full_mask_iou", "novel_view_iou", "chamfer_3d",
                                                                    "rotation_error_deg"}
    assert "no dataset" in alone.skipped["chamfer_3d"]
    assert alone.counts["mask_iou"] == 1 and "no target mask" in alone.metric_errors["test_00001"]["mask_iou"]
    plain = run_evaluation(tmp_path, lambda crop: FolderDataset(split, crop), template=template, cfg=cfg)
    assert "no ground truth" in plain.skipped["novel_view_iou"] and plain.counts["mask_iou"] == 2
    assert plain.per_image["test_00001"]["mask_iou"] == pytest.approx(shifted["mask_iou"])
    per_image, means = evaluate_results(tmp_path, None, template=template,
                                        cfg=EvaluationConfig(metrics=["mask_iou"], limit=1, grid_rows=0))
    assert per_image == {"test_00000": {"mask_iou": perfect["mask_iou"]}} and means == {"mask_iou": perfect["mask_iou"]}


@requires_cuda
def test_evaluation_on_cuda_matches_cpu(split, template, tmp_path):
    write_results(split, tmp_path)
    cfg = EvaluationConfig(**SMALL_EVAL)
    cpu = run_evaluation(tmp_path, split, template=MeshTemplate.uv_sphere(), cfg=cfg, device="cpu")
    cuda = run_evaluation(tmp_path, split, template=MeshTemplate.uv_sphere(), cfg=cfg, device=CUDA_DEVICE)
    assert cuda.per_image.keys() == cpu.per_image.keys()
    for image_id, values in cpu.per_image.items():
        assert cuda.per_image[image_id] == pytest.approx(values, abs=1e-4)


def test_evaluate_script_end_to_end(split, tmp_path):
    write_results(split, tmp_path)
    result = subprocess.run(
        [sys.executable, "scripts/evaluate.py", "--config", "configs/synthetic.yaml", "--results", str(tmp_path),
         "--data", str(split), "--set", "device=cpu", "--set", "evaluation.novel_view_size=32",
         "--set", "evaluation.grid_image_size=32", "--set", "evaluation.grid_rows=2"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["counts"]["evaluated"] == 2 and metrics["counts"]["failed"] == 2
    appearance = {"psnr_input_view", "ssim_input_view", "psnr_novel_views", "ssim_novel_views", "uv_error_seen",
                  "uv_error_unseen"}   # configs/synthetic.yaml adds these to the default list
    assert set(metrics["means"]) == {"mask_iou", "full_mask_iou", "novel_view_iou", "chamfer_3d",
                                     "rotation_error_deg"} | appearance
    assert metrics["per_image"]["test_00000"]["mask_iou"] > 0.99 and metrics["skipped"] == {}
    assert metrics["counts"]["per_metric"] == {name: 2 for name in metrics["means"]}
    # The perfect record matches the textured ground truth exactly; the shifted one (true mesh and
    # texture, wrong camera) only in the novel views and the texture.
    perfect, shifted = metrics["per_image"]["test_00000"], metrics["per_image"]["test_00001"]
    assert {name: perfect[name] for name in appearance} == {
        "psnr_input_view": PSNR_CEILING_DB, "ssim_input_view": 1.0, "psnr_novel_views": PSNR_CEILING_DB,
        "ssim_novel_views": 1.0, "uv_error_seen": 0.0, "uv_error_unseen": 0.0}
    assert shifted["psnr_input_view"] < 30 and shifted["ssim_input_view"] < 1
    assert shifted["psnr_novel_views"] == PSNR_CEILING_DB and shifted["uv_error_seen"] == 0.0
    assert metrics["higher_is_better"]["psnr_input_view"] and not metrics["higher_is_better"]["uv_error_unseen"]
    report = (tmp_path / "report.md").read_text()
    assert "| mask_iou |" in report and "Worst 2 images by mask IoU" in report
    for name in appearance:
        assert f"| {name} | " in report
    assert "test_00002" in report and "](report_grid.png)" in report
    with Image.open(tmp_path / "report_grid.png") as grid:
        # 2 rows of input, reconstruction, 4 predicted and 4 GT views, 32 px each, 2 px padding.
        assert grid.size == (10 * 32 + 11 * 2, 2 * 32 + 3 * 2)
    assert (tmp_path / "evaluate_config.yaml").is_file() and (tmp_path / "evaluate_log.txt").is_file()

    unknown = subprocess.run(
        [sys.executable, "scripts/evaluate.py", "--config", "configs/synthetic.yaml", "--results", str(tmp_path),
         "--set", "evaluation.metrics=[mask_io]", "--set", "device=cpu"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert unknown.returncode == 1 and "unknown metric 'mask_io'" in unknown.stderr


def test_images_the_inversion_failed_on_are_counted_and_listed(split, template, tmp_path):
    """summary.json's failed images (no result folder, or one without result.pt) are reported apart
    from the images that could not be evaluated, in metrics.json and report.md."""
    write_results(split, tmp_path)
    images = {"test_00000": {"status": "done", "iou": 0.9}, "test_00001": {"status": "done", "iou": 0.8},
              "unfinished": {"status": "failed", "reason": "inversion failed: loss is NaN"},
              "lost_1": {"status": "failed", "reason": "lost_1.png: cannot read image"},
              "lost_2": {"status": "failed", "reason": "annotations.json['lost_2'].class_id: 'bird' is not a class id"}}
    (tmp_path / "summary.json").write_text(json.dumps({"done": 2, "failed": 3, "images": images}))
    result = run_evaluation(tmp_path, None, template=template, cfg=EvaluationConfig(metrics=["mask_iou"], grid_rows=0))
    assert result.inversion_failed == {"lost_1": images["lost_1"]["reason"], "lost_2": images["lost_2"]["reason"],
                                       "unfinished": images["unfinished"]["reason"]}
    assert sorted(result.failed) == ["test_00002"] and sorted(result.per_image) == ["test_00000", "test_00001"]
    paths = write_outputs(result, tmp_path / "report")
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["counts"]["inversion_failed"] == 3 and metrics["counts"]["failed"] == 1
    assert metrics["inversion_failed"]["lost_2"] == images["lost_2"]["reason"]
    report = paths["report"].read_text()
    assert "6 images: 2 evaluated, 3 failed in the inversion, 1 could not be evaluated." in report
    assert "- lost_1: lost_1.png: cannot read image" in report and "- test_00002: " in report


def test_write_outputs_without_images(tmp_path, template):
    (tmp_path / "results" / "a").mkdir(parents=True)
    (tmp_path / "results" / "a" / "result.pt").write_bytes(b"")
    result = run_evaluation(tmp_path / "results", None, template=template, cfg=EvaluationConfig(**SMALL_EVAL))
    paths = write_outputs(result, tmp_path / "out")
    assert "grid" not in paths and json.loads(paths["metrics"].read_text())["means"] == {"mask_iou": None}
    assert "a" in paths["report"].read_text()


def test_evaluation_cuts_masks_as_the_inversion_did(tmp_path):
    crop = CropConfig(img_size=96, padding=0.05, mask_threshold=0.5)
    assert inversion_crop(tmp_path, crop) == crop  # no config.yaml: the evaluation's own crop
    (tmp_path / "config.yaml").write_text("inversion:\n  crop: {img_size: 96, padding: 0.05, mask_threshold: 0.95}\n")
    used = inversion_crop(tmp_path, crop)
    assert used.mask_threshold == 0.95 and used.padding == 0.05 and used.img_size == 96


# -- the crop each result was made with ------------------------------------------------------------------

def test_each_record_is_matched_to_its_sample_cut_with_the_crop_it_names(split, template, tmp_path):
    """A record that names its crop is evaluated with it, whatever config.yaml and evaluation.crop say;
    one without (written before records carried it) with config.yaml's, else evaluation.crop. A
    dataset is never copied or changed: it is opened again with each crop."""
    padded = CropConfig(padding=0.3, mask_threshold=0.95)
    bbox = json.loads((split / "annotations.json").read_text())["test_00000"]["bbox"]
    padded.img_size = square_crop_box(bbox, padded.padding)[2]   # cut without resampling
    sample = SyntheticDataset(split, padded)[0]
    cfg = EvaluationConfig(metrics=["mask_iou", "chamfer_3d"], grid_rows=0)   # evaluation.crop: padding 0.05

    def evaluate(out, record):
        record.save(out / "test_00000" / "result.pt")   # no target_mask.png: the dataset's mask is used
        opened = []

        def open_split(crop):
            opened.append(crop)
            return SyntheticDataset(split, crop)

        values = run_evaluation(out, open_split, template=template, cfg=cfg).per_image["test_00000"]
        return values, [crop.padding for crop in opened]

    # The record's crop wins over a config.yaml that says otherwise.
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "config.yaml").write_text("inversion:\n  crop: {padding: 0.05, mask_threshold: 0.95}\n")
    values, paddings = evaluate(tmp_path / "own", dataclasses.replace(record_for(sample, padded.img_size),
                                                                      crop=to_dict(padded)))
    assert values["mask_iou"] > 0.99 and values["chamfer_3d"] < 1e-5 and paddings == [0.05, 0.3]
    # An older record: config.yaml's crop, else evaluation.crop (here the wrong one).
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("inversion:\n  crop: {padding: 0.3, mask_threshold: 0.95}\n")
    values, paddings = evaluate(tmp_path / "config", record_for(sample, padded.img_size))
    assert values["mask_iou"] > 0.99 and paddings == [0.3, 0.3]   # evaluation.crop's size, then the record's
    values, _ = evaluate(tmp_path / "neither", record_for(sample, padded.img_size))
    assert values["mask_iou"] < 0.9   # the object cut with padding 0.05 is larger than the record's

    # A recorded crop that does not fit its record fails that image, with the reason.
    wrong = dataclasses.replace(record_for(sample, padded.img_size), crop=to_dict(dataclasses.replace(padded, img_size=8)))
    wrong.save(tmp_path / "wrong" / "test_00000" / "result.pt")
    result = run_evaluation(tmp_path / "wrong", split, template=template, cfg=cfg)
    assert "its crop is 8 x 8 but its image_size is" in result.failed["test_00000"]


def test_the_inversion_records_its_crop_and_older_records_still_load(tmp_path):
    from test_inversion_job import disc_sample, job_config, make_run

    crop = CropConfig(img_size=32, padding=0.1, mask_threshold=0.8)
    make_run(job_config(tmp_path / "out", crop=crop), {"a": disc_sample("a")}).run(progress=False)
    record = load_record(tmp_path / "out" / "a")
    assert record.crop == to_dict(crop) and isinstance(record.crop["padding"], float)
    older = torch.load(tmp_path / "out" / "a" / "result.pt", weights_only=True)
    del older["crop"]
    torch.save(older, tmp_path / "older.pt")
    assert load_record(tmp_path / "older.pt").crop is None


# -- novel views ----------------------------------------------------------------------------------------------

def test_every_novel_view_is_the_one_owners(template, tmp_path):
    """novel_view_iou's silhouettes, the FID_10 / FID_12 views and the report grid's views are
    meshinv.render.views' turntable, pixel for pixel."""
    import meshinv.evaluation.metrics as metrics
    from meshinv.evaluation.fid import novel_view_images
    from meshinv.evaluation.grid import grid_row
    from meshinv.render.views import render_turntable, turntable_ndc, turntable_silhouettes

    torch.manual_seed(0)
    vertices = template.vertices * torch.tensor([1.0, 0.6, 0.4]) + torch.tensor([0.3, -0.2, 0.1])  # off-centre
    texture = torch.rand(3, 16, 16) * 2 - 1
    azimuths = [0.0, 45.0, 90.0, 200.0]
    renderer = MeshRenderer(32)
    images, masks = render_turntable(template, renderer, vertices, texture, azimuths, background=1.0)
    assert torch.equal(renderer.rasterize(turntable_ndc(vertices, azimuths), template.faces).mask, masks)
    assert masks.sum() > 0 and (masks < 0.5).any()

    # novel_view_iou: the owner's silhouettes, which are the rendered views' masks.
    assert metrics.turntable_silhouettes is turntable_silhouettes
    assert torch.equal(turntable_silhouettes(template, renderer, vertices, azimuths), masks[:, 0] > 0.5)
    # FID_10 / FID_12: the rendered views in [0, 1].
    assert torch.equal(novel_view_images(template, vertices, texture, azimuths, 32), (images.clamp(-1, 1) + 1) / 2)
    # The report grid: input, reconstruction, then the rendered views.
    camera = torch.tensor([0.6, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    record = InversionRecord("v", torch.zeros(1), camera, camera, -1, texture, torch.zeros(3, 32, 32), vertices, SIZE, 1.0)
    cfg = EvaluationConfig(grid_image_size=32, grid_azimuths=azimuths)
    row, columns = grid_row(tmp_path, EvaluationContext(record, template, MeshRenderer(SIZE), cfg), with_gt=False)
    assert columns[2:] == ["pred 0", "pred 45", "pred 90", "pred 200"] and torch.equal(row[2:], images)
