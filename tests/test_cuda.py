"""The CUDA paths a user hits, beyond those the renderer, inversion, evaluation and template tests
already compare with the CPU: the Chamfer losses, the generator and discriminators and the camera
predictor agree with the CPU in float64 (values, gradients, the chosen nearest neighbours), and
scripts/invert.py, evaluate.py, pretrain.py, train_camera.py and predict_cameras.py run with
device=cuda and write finite outputs that load on a machine without a GPU.

Every test runs on conftest.CUDA_DEVICE and is skipped without it; MESHINV_TEST_CUDA_DEVICE=cpu runs
them on the CPU, which checks the tests themselves on a machine without a GPU.

Tolerance of the float64 comparisons: another device changes only the order of summation (and the
use of fused multiply-adds), an error of about 1e-16 relative per operation, growing with the terms
summed per output (a few thousand here) and the depth (a few dozen layers) to ~1e-12 at the very
worst (on the CPU, 1 against 2 threads differ by ~1e-15). rtol = 1e-9 leaves a thousandfold
margin, while a real fault (a wrong index, a dropped term, a float32 path) shows at 1e-6 or more.
atol = 1e-10 covers values that are zero in exact arithmetic and so are pure rounding noise (the
gradient of a bias followed by instance norm: ~1e-14 here, against values and gradients of 1e-3 to
30).
"""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from conftest import CUDA_DEVICE, REPO_ROOT, requires_cuda
from test_camera_predictor import synthetic as camera_data  # noqa: F401 -- fixture: a 64 px train/val tree
from test_discriminators import settled, textured_input
from test_fid import TinyFeatures, small_fid_config
from test_fid import results as fid_results  # noqa: F401 -- fixture: 3 synthetic images and their results
from test_inversion import _script as invert_args
from test_inversion import split as inversion_split  # noqa: F401 -- fixture: 4 synthetic test images
from test_inversion import tiny_generator as tiny_prior
from test_chamfer_pruning import dense_first_minimisers, point_sets
from test_losses import dense_texture_cost, random_sets
from test_pretrain import TINY_MODEL, _run_script as run_pretrain, _script_args as pretrain_args
from test_pretrain import pseudogt  # noqa: F401 -- fixture: 8 training images and their pseudo-GT
from meshinv.evaluation.evaluate import run_evaluation
from meshinv.geometry import MeshTemplate
from meshinv.inversion import load_record
from meshinv.losses import (
    SpatialWeighting, chamfer_mask_loss, feature_chamfer_texture_loss, feature_point_set, image_point_set,
    nearest_neighbours, pixel_chamfer_texture_loss, point_set_from_mask,
)
from meshinv.losses import chamfer
from meshinv.losses.chamfer import _MINIMA_GROUP, _min_along_rows, _row_minima
from meshinv.models import ConvMeshGenerator, PatchDiscriminator, UVDiscriminator, load_generator
from meshinv.models import save_generator_checkpoint
from meshinv.models.camera import CameraPredictor, load_camera_predictor, save_camera_predictor
from meshinv.training import LATEST, ModelConfig
from meshinv.training.camera import FINAL

pytestmark = requires_cuda

RTOL, ATOL = 1e-9, 1e-10  # see the module docstring


# -- helpers ---------------------------------------------------------------------------------------

def on_device(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Copies on CUDA_DEVICE, leaves of the autograd graph that require grad as their originals do."""
    return [t.detach().to(CUDA_DEVICE).requires_grad_(t.requires_grad) for t in tensors]


def assert_agree(device_value, cpu_value, what: str) -> None:
    """The device's result equals the CPU's up to float64 rounding (None: neither has a gradient)."""
    if cpu_value is None or device_value is None:
        assert cpu_value is None and device_value is None, what
        return
    assert device_value.device.type == torch.device(CUDA_DEVICE).type, what
    torch.testing.assert_close(device_value.cpu(), cpu_value, rtol=RTOL, atol=ATOL, msg=what)


def forward_backward(function, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, tuple]:
    """function(*inputs) (B,) and the gradients of its sum w.r.t. the inputs that require grad."""
    value = function(*inputs)
    wanted = [t for t in inputs if t.requires_grad]
    return value, torch.autograd.grad(value.sum(), wanted, allow_unused=True)


def tensors_in(obj):
    """Every tensor in nested dicts, lists and tuples."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from tensors_in(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from tensors_in(value)


def assert_finite(obj, what: str) -> None:
    for tensor in tensors_in(obj):
        assert not tensor.is_floating_point() or torch.isfinite(tensor).all(), what


def assert_loads_on_a_cpu(path) -> dict:
    """A file meant to travel (a prior, a predictor, a result, predictions) holds CPU tensors only:
    loaded without map_location, as a user's own torch.load would, nothing lands on a GPU."""
    data = torch.load(path, weights_only=True)
    assert {t.device.type for t in tensors_in(data)} <= {"cpu"}, path
    assert_finite(data, str(path))
    return data


# -- library pieces: CUDA == CPU in float64 ------------------------------------------------------------

def test_chamfer_losses_and_nearest_neighbours_agree_with_the_cpu():
    # Tiles of 128 references plus a ragged last one, several row blocks: both the grouped row
    # minimum and torch.min run, in both search directions, over padded (ragged) sets.
    chunk = 1 << 14

    # Point sets from masks: the same points, in the same order, on either device.
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(2, 3, 32, 32, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    masks = (torch.rand(2, 1, 32, 32, generator=g) < torch.tensor([0.4, 0.6]).view(2, 1, 1, 1)).float()
    targets = torch.rand(2, 3, 32, 32, generator=g, dtype=torch.float64) * 2 - 1
    target_masks = (torch.rand(2, 1, 32, 32, generator=g) < 0.5).float()
    for cpu_set, device_set in [(image_point_set(images, masks), image_point_set(*on_device(images, masks))),
                                (point_set_from_mask(target_masks), point_set_from_mask(*on_device(target_masks)))]:
        assert torch.equal(device_set.valid.cpu(), cpu_set.valid)
        assert_agree(device_set.positions, cpu_set.positions, "point positions")
        assert_agree(device_set.values.detach(), cpu_set.values.detach(), "point values")
    feature_map = torch.randn(2, 16, 8, 8, generator=g, dtype=torch.float64)
    cpu_cells = feature_point_set(feature_map, masks)
    device_cells = feature_point_set(*on_device(feature_map, masks))
    assert torch.equal(device_cells.valid.cpu(), cpu_cells.valid)
    assert_agree(device_cells.values, cpu_cells.values, "feature point set")

    # The pixel loss as the inversion computes it, from a rendering's and a target's point sets.
    def pixel_loss(image, mask, target, target_mask):
        pred, tgt = image_point_set(image, mask), image_point_set(target, target_mask)
        return pixel_chamfer_texture_loss(pred.positions, pred.values, tgt.positions, tgt.values,
                                          pred_valid=pred.valid, target_valid=tgt.valid, chunk_size=chunk)

    cpu = forward_backward(pixel_loss, [images, masks, targets, target_masks])
    cuda = forward_backward(pixel_loss, on_device(images, masks, targets, target_masks))
    assert_agree(cuda[0], cpu[0], "pixel loss")
    assert_agree(cuda[1][0], cpu[1][0], "pixel loss gradient")

    # The feature loss (both directions) and the mask loss on ragged random sets.
    valid_a = torch.arange(300) < torch.tensor([[300], [217]])
    valid_b = torch.arange(500) < torch.tensor([[451], [500]])
    features = random_sets(1, 2, 300, 500, 8)
    positions = random_sets(2, 2, 300, 500, 1)[::2]
    cases = {
        "feature loss": (lambda *x: feature_chamfer_texture_loss(*x, pred_valid=valid_a.to(x[0].device),
                                                                  target_valid=valid_b.to(x[0].device),
                                                                  chunk_size=chunk), features),
        "mask loss": (lambda *x: chamfer_mask_loss(*x, pred_valid=valid_a.to(x[0].device),
                                                   target_valid=valid_b.to(x[0].device), chunk_size=chunk),
                      positions),
    }
    for name, (loss, inputs) in cases.items():
        cpu = forward_backward(loss, inputs)
        cuda = forward_backward(loss, on_device(*inputs))
        assert_agree(cuda[0], cpu[0], name)
        for i, (device_grad, cpu_grad) in enumerate(zip(cuda[1], cpu[1])):
            assert_agree(device_grad, cpu_grad, f"{name} gradient {i}")

    # The chosen neighbours (texture cost on the feature sets, plain distance on their positions)
    # are the dense minimisers. Random float64 data leaves every best match ahead of the second
    # best by far more than rounding (asserted), so the choice is unambiguous.
    pos_a, val_a, pos_b, val_b = [t.detach() for t in features]
    weighting = SpatialWeighting()
    for name, weighted in (("texture", True), ("mask", False)):
        cost = (dense_texture_cost(pos_a, val_a, pos_b, val_b) if weighted
                else ((pos_a[:, :, None] - pos_b[:, None]) ** 2).sum(-1))
        cost = cost.masked_fill(~(valid_a[:, :, None] & valid_b[:, None]), math.inf)
        query, reference = (val_a, val_b) if weighted else (pos_a, pos_b)
        extra = dict(query_pos=pos_a, reference_pos=pos_b, weighting=weighting) if weighted else {}
        found = nearest_neighbours(*on_device(query, reference), query_valid=valid_a.to(CUDA_DEVICE),
                                   reference_valid=valid_b.to(CUDA_DEVICE), both_directions=True, chunk_size=chunk,
                                   **{k: (v.to(CUDA_DEVICE) if torch.is_tensor(v) else v) for k, v in extra.items()})
        for direction, dim, valid, index in (("query", 2, valid_a, found.query_to_reference),
                                             ("reference", 1, valid_b, found.reference_to_query)):
            two_best = cost.topk(2, dim=dim, largest=False)
            gap = (two_best.values.select(dim, 1) - two_best.values.select(dim, 0))[valid]
            assert gap.min() > 1e-9, f"{name}/{direction}: near-tie in the test data"
            assert torch.equal(index.cpu()[valid], two_best.indices.select(dim, 0)[valid]), f"{name}/{direction}"

    # Ties: the grouped row minimum picks the first minimiser on the device too, as torch.min does.
    cost = torch.randint(0, 20, (2, 5, 256), generator=g).double()
    values, indices = _min_along_rows(cost.to(CUDA_DEVICE))
    expected = cost.min(dim=2)
    assert torch.equal(values.cpu(), expected.values) and torch.equal(indices.cpu(), expected.indices)
    # The exact search: its tiles' grouped minima equal torch's on the device, and among exactly tied
    # partners (pixel centres, colours on 5 levels) it takes the first, as a dense search does.
    cost = torch.randint(0, 20, (2, 128, 256), generator=g).double()
    for tile in (cost, cost.transpose(1, 2)):
        row_min, group_min = _row_minima(tile.to(CUDA_DEVICE))
        assert torch.equal(row_min.cpu(), tile.amin(dim=2))
        assert torch.equal(group_min.cpu(), tile.reshape(2, tile.shape[1], -1, _MINIMA_GROUP).amin(dim=3))
    tied = point_sets("grid", 0, [600, 350], [700, 500], 3, torch.float32)
    dense = dense_first_minimisers(*tied, weighting, True)
    for pruning in (False, True):
        with pytest.MonkeyPatch.context() as patch:  # prune sets this small too
            patch.setattr(chamfer, "PRUNE_MIN_REFERENCES", 2 * chamfer._REFERENCE_BLOCK)
            found = nearest_neighbours(*on_device(*tied[:2]), query_valid=tied[2].to(CUDA_DEVICE),
                                       reference_valid=tied[3].to(CUDA_DEVICE), query_pos=tied[4].to(CUDA_DEVICE),
                                       reference_pos=tied[5].to(CUDA_DEVICE), weighting=weighting,
                                       both_directions=True, chunk_size=chunk, pruning=pruning, exact=True)
        assert torch.equal(found.query_to_reference.cpu(), dense[0]), f"ties, pruning={pruning}"
        assert torch.equal(found.reference_to_query.cpu(), dense[1]), f"ties, pruning={pruning}"


def test_generator_and_discriminators_agree_with_the_cpu():
    """One pretraining-shaped pass (generator -> UV discriminators and PatchGAN), forward and
    backward, in eval mode after a few train-mode passes (so that batch-norm statistics and
    spectral norm's vectors are not the trivial initial ones)."""
    model = ModelConfig(**TINY_MODEL)
    torch.manual_seed(0)
    generator = ConvMeshGenerator(**model.generator_kwargs()).double()
    with torch.no_grad():
        generator.conv_mesh.weight.normal_(0, 0.01)  # let gradients pass the zero-initialised mesh head
    uv = UVDiscriminator(model.texture_resolution, model.n_classes, model.num_uv_discriminators,
                         width_multiplier=model.width_multiplier).double()
    patch = PatchDiscriminator(3, model.patch_base_channels).double()
    z = torch.randn(3, model.latent_dim, dtype=torch.float64)
    classes = torch.tensor([0, 3, 7])
    alpha = textured_input(3, model.texture_resolution, seed=1)[:, 3:].double()
    settled(generator, z, classes)
    with torch.no_grad():
        texture, mesh_map = generator(z, classes)
    settled(uv, torch.cat([texture * alpha, alpha], dim=1), mesh_map, classes)
    settled(patch, F.avg_pool2d(texture, 4))

    def run(device):
        g, d, p = (copy.deepcopy(m).to(device) for m in (generator, uv, patch))
        latent = z.detach().clone().to(device).requires_grad_(True)  # a fresh leaf: z.to('cpu') is z itself
        c, a = classes.to(device), alpha.to(device)
        texture, mesh_map = g(latent, c)
        scores, masks = d(torch.cat([texture * a, a], dim=1), mesh_map, c)
        image_scores = p(F.avg_pool2d(texture, 4))
        loss = sum((s * m).sum() / m.sum() for s, m in zip(scores, masks)) + image_scores.square().mean()
        loss.backward()
        outputs = {"texture": texture, "mesh_map": mesh_map, "image_scores": image_scores, "z grad": latent.grad,
                   **{f"uv scores {i}": s for i, s in enumerate(scores)}}
        grads = {f"{name} {key}": param.grad for name, module in (("generator", g), ("uv", d), ("patch", p))
                 for key, param in module.named_parameters()}
        return outputs, grads

    cpu_outputs, cpu_grads = run("cpu")
    device_outputs, device_grads = run(CUDA_DEVICE)
    assert all(grad is not None for grad in cpu_grads.values())
    for what in cpu_outputs:
        assert_agree(device_outputs[what].detach(), cpu_outputs[what].detach(), what)
    for what in cpu_grads:
        assert_agree(device_grads[what], cpu_grads[what], what)


@pytest.mark.parametrize("variant", [dict(input_size=64),
                                     dict(input_size=96, rotation_head="6d", masked_input=True)],
                         ids=["quaternion", "6d_masked_resized"])
def test_camera_predictor_agrees_with_the_cpu(variant):
    """Forward and backward in eval mode; the second variant also resizes (antialiased) 96 px crops."""
    options = dict(variant)
    size = options.pop("input_size")
    torch.manual_seed(0)
    model = CameraPredictor(64, feature_dim=16, pretrained_trunk=False, **options).double().eval()
    g = torch.Generator().manual_seed(1)
    images = (torch.rand(2, 3, size, size, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    masks = (torch.rand(2, 1, size, size, generator=g) > 0.3).double()

    def run(device):
        m = copy.deepcopy(model).to(device)
        x = images.detach().to(device).requires_grad_(True)
        cameras, rotations = m.predict(x, masks.to(device))
        weights = torch.linspace(-1, 1, 7, dtype=torch.float64, device=device)
        ((cameras * weights).sum() + rotations.sum()).backward()
        return {"cameras": cameras.detach(), "rotations": rotations.detach(), "image grad": x.grad,
                **{f"grad {key}": p.grad for key, p in m.named_parameters()}}

    cpu, cuda = run("cpu"), run(CUDA_DEVICE)
    for what in cpu:
        assert_agree(cuda[what], cpu[what], what)


# -- the scripts with device=cuda ------------------------------------------------------------------------

def test_invert_then_evaluate_scripts_run_on_cuda(inversion_split, tmp_path):  # noqa: F811
    """invert.py with every device-side part switched on (a camera predictor, the VGG feature term,
    batches of 2, TensorBoard curves), then evaluate.py on its results."""
    prior = tmp_path / "prior.pt"
    save_generator_checkpoint(prior, tiny_prior())
    predictor = tmp_path / "camera.pt"
    torch.manual_seed(0)
    save_camera_predictor(predictor, CameraPredictor(64, feature_dim=16))
    out = tmp_path / "out"
    result = subprocess.run(
        invert_args(inversion_split, out, prior, "--set", "inversion.iterations=[2,2]", "--set", "inversion.batch_size=2",
                    "--set", "inversion.loss.feature_weight=0.04", "--set", "inversion.loss.on_missing_vgg=random",
                    "--set", f"inversion.camera_init.predictor={predictor}", "--set", "inversion.tensorboard=true",
                    device=CUDA_DEVICE),
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    ids = sorted(path.stem for path in (inversion_split / "images").iterdir())
    assert summary["done"] == len(ids) == 4 and summary["failed"] == 0
    for image_id in ids:
        folder = out / image_id
        for name in ("input.png", "render.png", "pred_mask.png", "mesh.obj", "mesh.png", "turntable.gif"):
            assert (folder / name).is_file(), (image_id, name)
        assert_loads_on_a_cpu(folder / "result.pt")
        record = load_record(folder)
        assert record.camera_source == "predictor" and set(record.losses) >= {"mask", "pixel", "feature", "total"}
        assert all(math.isfinite(v) for v in record.losses.values()) and 0 <= record.iou <= 1
    assert list((out / "tensorboard").glob("events.*"))

    result = subprocess.run(
        [sys.executable, "scripts/evaluate.py", "--config", "configs/synthetic.yaml", "--results", str(out),
         "--data", str(inversion_split), "--set", f"device={CUDA_DEVICE}", "--set", "evaluation.novel_view_size=32",
         "--set", "evaluation.grid_image_size=32", "--set", "evaluation.grid_rows=2"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["counts"]["evaluated"] == 4 and metrics["counts"]["failed"] == 0 and metrics["skipped"] == {}
    assert set(metrics["means"]) == {"mask_iou", "full_mask_iou", "novel_view_iou", "chamfer_3d", "rotation_error_deg",
                                     "psnr_input_view", "ssim_input_view", "psnr_novel_views", "ssim_novel_views",
                                     "uv_error_seen", "uv_error_unseen"}   # configs/synthetic.yaml's list
    assert all(math.isfinite(v) for v in metrics["means"].values())
    assert (out / "report_grid.png").is_file()


def test_fid_metrics_run_on_cuda(fid_results, tmp_path):  # noqa: F811
    """The dataset-level metrics: novel views rendered and features taken on the device. (The FIDs of
    3 images are too ill-conditioned to compare across devices; they must come out finite.)"""
    split, out = fid_results
    cfg = small_fid_config()
    cfg.fid.stats_cache_dir = str(tmp_path / "cache")
    result = run_evaluation(out, split, template=MeshTemplate.uv_sphere(), cfg=cfg, feature_extractor=TinyFeatures(),
                            device=CUDA_DEVICE)
    assert not result.skipped and result.counts == {"mask_iou": 3, "fid_1": 3, "fid_10": 3, "fid_12": 3}
    assert all(math.isfinite(result.means[m]) and result.means[m] >= -1e-6 for m in ("fid_1", "fid_10", "fid_12"))


def test_pretrain_script_runs_and_resumes_on_cuda(pseudogt, tmp_path):  # noqa: F811
    """2 steps, then resumed to 3, with the Frechet distances to the ground truth and a sample grid."""
    out = tmp_path / "run"
    frechet = ["--set", f"pretrain.gt_dir={pseudogt / 'gt'}", "--set", "pretrain.frechet_samples=16",
               "--set", "pretrain.frechet_components=4"]
    for steps, resume in ((2, []), (3, ["--resume"])):
        result = run_pretrain(*pretrain_args(pseudogt, out, *frechet, "--set", f"pretrain.max_steps={steps}", *resume,
                                             device=CUDA_DEVICE))
        assert result.returncode == 0, result.stderr[-3000:]
    assert "at iteration 2" in result.stderr
    latest = torch.load(out / LATEST, map_location="cpu", weights_only=True)
    assert latest["iteration"] == 3
    assert ("rng_cuda" in latest) == (torch.device(CUDA_DEVICE).type == "cuda")  # resumed runs replay CUDA draws
    assert_finite({key: latest[key] for key in ("generator", "generator_ema", "uv_discriminator", "patch_discriminator")},
                  "checkpoint weights")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frechet"]["iteration"] == 3 and summary["frechet"]["frechet_mesh"] > 0
    assert all(math.isfinite(v) for v in [*summary["losses"].values(), *summary["frechet"].values()])
    assert (out / "samples" / "0000003.png").is_file()
    assert_loads_on_a_cpu(out / "generator_ema.pt")
    generator = load_generator(out / "generator_ema.pt")
    texture, mesh_map = generator(torch.randn(2, TINY_MODEL["latent_dim"]), torch.tensor([0, 3]))
    assert torch.isfinite(texture).all() and torch.isfinite(mesh_map).all()


def test_train_camera_and_predict_cameras_scripts_run_on_cuda(camera_data, tmp_path):  # noqa: F811
    """The synthetic config's predictor (6D head, masked input, matrix loss, mirror/zoom/shift
    augmentation), trained from scratch for 3 steps, then its predictions for the val split."""
    out = tmp_path / "camera"
    settings = {"camera.data": camera_data, "camera.pretrained_trunk": "false", "camera.batch_size": 4,
                "camera.max_steps": 3, "camera.eval_every": 2, "camera.checkpoint_every": 2,
                "camera.eval_batch_size": 4, "device": CUDA_DEVICE,
                # Not the config's export, the shipped predictor in pretrained/, which this would overwrite.
                "camera.export": tmp_path / "exported.pt"}
    overrides = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    result = subprocess.run([sys.executable, "scripts/train_camera.py", "--config", "configs/synthetic.yaml",
                             "--out", str(out), *overrides], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_loads_on_a_cpu(tmp_path / "exported.pt")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 3 and summary["evaluation"]["images"] == 4
    assert all(math.isfinite(v) for v in [*summary["losses"].values(), *summary["evaluation"].values()])
    assert torch.load(out / LATEST, map_location="cpu", weights_only=True)["iteration"] == 3
    assert_loads_on_a_cpu(out / FINAL)
    assert load_camera_predictor(out / FINAL).config["rotation_head"] == "6d"

    predictions = tmp_path / "cmr_pred_cam.pth"
    result = subprocess.run([sys.executable, "scripts/predict_cameras.py", "--config", "configs/synthetic.yaml",
                             "--data", str(camera_data / "val"), "--checkpoint", str(out / FINAL),
                             "--out", str(predictions), "--set", f"device={CUDA_DEVICE}"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    written = assert_loads_on_a_cpu(predictions)
    assert sorted(written) == sorted(path.stem for path in (camera_data / "val" / "images").iterdir())
    for entry in written.values():
        assert entry["pred_cam"].shape == (7,) and 0 <= entry["pred_pose_overlay_iou"] <= 1
