"""Appearance against the 3D ground truth: PSNR and SSIM on hand-computable images, the texel
conventions that the UV errors rest on, and the six metrics (psnr/ssim in the input view and over
the novel views, uv_error_seen / uv_error_unseen) on records with known answers (tiny images).
The end-to-end run of scripts/evaluate.py with these metrics is in tests/test_evaluation.py."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import CUDA_DEVICE, requires_cuda
import meshinv.evaluation.metrics as metrics
from meshinv.data.preprocess import CropConfig
from meshinv.data.synthetic import SyntheticDataset
from meshinv.datagen.pseudogt import build_pseudogt_textures
from meshinv.datagen.synthetic import SyntheticConfig, SyntheticGenerator, write_split
from meshinv.evaluation import METRIC_INFO, METRICS, EvaluationConfig, EvaluationContext, MissingInputError
from meshinv.evaluation.appearance import (
    SSIM_K1, gaussian_window, mean_absolute_error, psnr, ssim, ssim_map,
)
from meshinv.evaluation.metrics import PSNR_CEILING_DB, uv_texels
from meshinv.geometry import MeshTemplate
from meshinv.inversion.results import InversionRecord
from meshinv.render import MeshRenderer
from meshinv.render.texels import resample_texture, texel_surface, texel_uv

SIZE = 48
APPEARANCE = ["psnr_input_view", "ssim_input_view", "psnr_novel_views", "ssim_novel_views", "uv_error_seen",
              "uv_error_unseen"]


# -- PSNR and SSIM on images with known answers --------------------------------------------------------------

def test_psnr_of_identical_images_is_inf_and_of_a_constant_offset_is_analytic():
    torch.manual_seed(0)
    a = torch.rand(3, 20, 20, dtype=torch.float64)
    mask = torch.zeros(20, 20, dtype=torch.bool)
    mask[4:15, 3:12] = True
    assert psnr(a, a.clone(), mask) == math.inf
    offset = 0.05
    b = a.clone()
    b[:, mask] += offset
    b[:, ~mask] = torch.rand_like(b[:, ~mask])  # outside the mask: not counted
    assert psnr(a, b, mask) == pytest.approx(-20 * math.log10(offset), abs=1e-9)  # 26.0206 dB
    assert psnr(b, a, mask) == psnr(a, b, mask)
    with pytest.raises(ValueError, match="selects no pixel"):
        psnr(a, b, torch.zeros(20, 20, dtype=torch.bool))


def test_gaussian_window_is_the_standard_one():
    window = gaussian_window()
    assert window.numel() == 11 and float(window.sum()) == pytest.approx(1.0, abs=1e-15)
    assert torch.equal(window, window.flip(0))
    assert float(window[5] / window[6]) == pytest.approx(math.exp(1 / (2 * 1.5 ** 2)), rel=1e-12)


def test_ssim_is_one_for_identical_images_symmetric_and_at_most_one():
    torch.manual_seed(0)
    mask = torch.ones(24, 24, dtype=torch.bool)
    for dtype in (torch.float32, torch.float64):
        a = torch.rand(3, 24, 24, dtype=dtype)
        b = (a + 0.3 * torch.rand_like(a)).clamp(0, 1)
        # Numerator and denominator are the same float operations when a == b: exactly 1.
        assert torch.equal(ssim_map(a, a.clone()), torch.ones_like(a, dtype=ssim_map(a, a).dtype))
        assert ssim(a, a.clone(), mask) == 1.0
        assert torch.equal(ssim_map(a, b), ssim_map(b, a))
        # Cauchy-Schwarz bounds it by 1; float32 rounding of the moments may add ~1e-7.
        assert float(ssim_map(a, b).max()) <= 1 + (1e-6 if dtype == torch.float32 else 1e-12)
        assert ssim(a, b, mask) < 0.99
    # A batch is its images one by one (ssim_novel_views scores all views in one pass).
    a, b = torch.rand(2, 3, 24, 24, dtype=torch.float64), torch.rand(2, 3, 24, 24, dtype=torch.float64)
    assert torch.allclose(ssim_map(a, b), torch.stack([ssim_map(a[0], b[0]), ssim_map(a[1], b[1])]), atol=1e-12)


def test_ssim_of_constant_images_is_the_luminance_term():
    """Constant images have no variance: SSIM = (2 a b + C1) / (a^2 + b^2 + C1) everywhere."""
    a, b = 0.2, 0.7
    x = torch.full((3, 16, 16), a, dtype=torch.float64)
    y = torch.full((3, 16, 16), b, dtype=torch.float64)
    c1 = SSIM_K1 ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)  # the contrast-structure term is C2 / C2
    assert torch.allclose(ssim_map(x, y), torch.full_like(x, expected), atol=1e-12, rtol=0)
    # A perfectly anti-correlated structure about the same mean gives a negative SSIM.
    pattern = torch.rand(3, 16, 16, dtype=torch.float64)
    assert ssim(0.5 + 0.2 * (pattern - 0.5), 0.5 - 0.2 * (pattern - 0.5), torch.ones(16, 16, dtype=torch.bool)) < 0


def test_mean_absolute_error_over_a_selection():
    a = torch.tensor([[0.0, 0.5, 1.0], [0.2, 0.2, 0.2]])
    b = torch.tensor([[0.0, 0.25, 0.0], [0.2, 0.3, 0.2]])
    assert mean_absolute_error(a, b, torch.tensor([True, True, False])) == pytest.approx((0.25 + 0.1) / 4)
    with pytest.raises(ValueError, match="nothing is selected"):
        mean_absolute_error(a, b, torch.zeros(3, dtype=torch.bool))


# -- texels: one convention for the pseudo-GT, the renderer and the resampling ---------------------------------

@pytest.mark.parametrize("symmetric", [True, False])
def test_texel_surface_places_texels_at_texel_uv(symmetric):
    """The texel centres texel_surface rasterises are those texel_uv gives (the UVs interpolated
    with its barycentrics land on them)."""
    template = MeshTemplate.uv_sphere(8, 16, symmetric=symmetric)
    size = 24
    surface = texel_surface(template, size)
    corners = template.uvs[template.face_uv_index][surface.face]  # (N, 3, 2)
    uv = (surface.bary[..., None] * corners).sum(1)
    assert torch.allclose(uv, texel_uv(size, symmetric).reshape(-1, 2)[surface.texel], atol=1e-5)


@pytest.mark.parametrize("symmetric", [True, False])
def test_resample_texture_reads_the_texture_as_the_renderer_places_it(symmetric):
    """A texture holding cos(2 pi u) and v at its own texel centres, read at another size's texel
    centres, holds cos(2 pi u) and v there: within bilinear interpolation's error (h^2 / 8 max |f''|
    = 0.019 for 16 texels), far below the 0.2 that a half-texel offset would give; v, linear, exactly."""
    template = MeshTemplate.uv_sphere(8, 16, symmetric=symmetric)
    source_uv = texel_uv(16, symmetric, torch.float64)
    texture = torch.stack([torch.cos(2 * math.pi * source_uv[..., 0]), source_uv[..., 1]])[None]
    assert resample_texture(template, texture, 16) is texture
    for size in (11, 40):
        target_uv = texel_uv(size, symmetric, torch.float64)
        resampled = resample_texture(template, texture, size)[0]
        assert resampled.shape == (2, size, size)
        assert (resampled[0] - torch.cos(2 * math.pi * target_uv[..., 0])).abs().max() < 0.025
        assert torch.allclose(resampled[1], target_uv[..., 1], atol=1e-12)


# -- the metrics on records with known answers --------------------------------------------------------------

@pytest.fixture(scope="module")
def template():
    return MeshTemplate.uv_sphere()


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """Two synthetic test images (64 px, 32 x 32 textures, one behind an occluder), cut at 48 px."""
    cfg = SyntheticConfig(out_dir=str(tmp_path_factory.mktemp("synthetic")), image_size=64, texture_size=32,
                          splits={"test": 2}, occluder_fraction=0.5, contact_sheet_rows=0)
    root = write_split(cfg, "test", 2, SyntheticGenerator(cfg))
    dataset = SyntheticDataset(root, CropConfig(img_size=SIZE))
    return [dataset[i] for i in range(len(dataset))]


def record_for(sample, texture=None, camera=None) -> InversionRecord:
    """A record that reproduces the sample exactly unless `texture` / `camera` say otherwise."""
    return InversionRecord(
        image_id=sample.image_id, z=torch.zeros(8), camera=sample.camera.clone() if camera is None else camera,
        camera_init=sample.camera.clone(), class_id=sample.class_id,
        texture=sample.gt["texture"].clone() if texture is None else texture, mesh_map=sample.gt["deformation_map"],
        vertices=sample.gt["vertices"], image_size=SIZE, iou=float("nan"))


def context(template, sample, record, gt=None) -> EvaluationContext:
    return EvaluationContext(record, template, MeshRenderer(SIZE), EvaluationConfig(novel_view_size=40),
                             target_mask=sample.mask, gt=sample.gt if gt is None else gt, gt_camera=sample.camera)


def values(ctx) -> dict[str, float]:
    return {name: METRICS[name](ctx) for name in APPEARANCE}


def test_the_metrics_are_registered_as_ground_truth_metrics():
    for name in APPEARANCE:
        info = METRIC_INFO[name]
        assert info.needs_gt and info.level == "image"
        assert info.higher_is_better == (not name.startswith("uv_error"))


def test_a_perfect_prediction_scores_perfectly(template, samples):
    for sample in samples:
        ctx = context(template, sample, record_for(sample))
        assert values(ctx) == {"psnr_input_view": PSNR_CEILING_DB, "ssim_input_view": 1.0,
                               "psnr_novel_views": PSNR_CEILING_DB, "ssim_novel_views": 1.0,
                               "uv_error_seen": 0.0, "uv_error_unseen": 0.0}
        assert psnr(*metrics._input_views(ctx, "test")) == math.inf  # the ceiling stands for inf


def test_a_constant_colour_offset_gives_the_analytic_psnr(template, samples):
    """Texture + 2d in [-1, 1] is colour + d in [0, 1] wherever the mesh is drawn (bilinear
    sampling commutes with adding a constant; float32 rounding leaves ~1e-7), and the silhouettes
    are the truth's: PSNR = -20 log10(d), every texel off by d."""
    sample = samples[0]
    offset = 0.05
    ctx = context(template, sample, record_for(sample, texture=sample.gt["texture"] + 2 * offset))
    expected = -20 * math.log10(offset)
    result = values(ctx)
    assert result["psnr_input_view"] == pytest.approx(expected, abs=1e-3)
    assert result["psnr_novel_views"] == pytest.approx(expected, abs=1e-3)
    assert result["uv_error_seen"] == pytest.approx(offset, abs=1e-6)
    assert result["uv_error_unseen"] == pytest.approx(offset, abs=1e-6)
    assert result["ssim_input_view"] < 1 and result["ssim_novel_views"] < 1


def test_uv_errors_split_the_surface_texels_by_the_pseudogt_visibility(template, samples):
    """seen / not seen partition the texels on the surface; seen is exactly the pseudo-GT's visibility
    for the photo's mask and the GT mesh and camera; a prediction that differs only on unseen
    texels has uv_error_seen 0 exactly."""
    for sample in samples:
        truth = sample.gt["texture"]
        size = truth.shape[-1]
        prediction, target, seen = uv_texels(context(template, sample, record_for(sample)), "test")
        surface = texel_surface(template, size)
        assert seen.shape == surface.texel.shape and prediction.shape == target.shape == (3, len(seen))
        assert 0.1 < seen.double().mean() < 0.6  # about one side of the bird
        _, alpha = build_pseudogt_textures(sample.image[None], sample.mask[None], sample.camera[None],
                                           sample.gt["vertices"][None], template, surface)
        assert torch.equal(alpha.reshape(-1)[surface.texel] > 0, seen)

        changed = truth.clone().reshape(3, -1)
        changed[:, surface.texel[~seen]] += 0.5
        ctx = context(template, sample, record_for(sample, texture=changed.reshape(truth.shape)))
        assert METRICS["uv_error_seen"](ctx) == 0.0
        assert METRICS["uv_error_unseen"](ctx) == pytest.approx(0.25, abs=1e-6)


def test_occluded_texels_are_not_seen(template, samples):
    """An image behind the occluder: hiding more of the mask only removes seen texels."""
    sample = next(s for s in samples if bool(s.gt["occluded"]))
    _, _, seen = uv_texels(context(template, sample, record_for(sample)), "test")
    _, _, unoccluded = uv_texels(EvaluationContext(record_for(sample), template, MeshRenderer(SIZE), EvaluationConfig(),
                                                   target_mask=sample.gt["full_mask"], gt=sample.gt,
                                                   gt_camera=sample.camera), "test")
    assert (unoccluded | ~seen).all() and unoccluded.sum() > seen.sum()


def test_a_coarser_predicted_texture_is_compared_on_the_true_grid(template, samples):
    """A constant 8 x 8 prediction, read at the true texture's 32 x 32 texels, is that constant:
    each error is the mean |c - truth| over the texels of its set."""
    sample = samples[0]
    color = torch.tensor([0.3, -0.2, 0.5])
    ctx = context(template, sample, record_for(sample, texture=color[:, None, None].expand(3, 8, 8).clone()))
    _, target, seen = uv_texels(ctx, "test")
    mae = ((color[:, None] + 1) / 2 - target).abs()
    assert METRICS["uv_error_seen"](ctx) == pytest.approx(float(mae[:, seen].mean()), abs=1e-6)
    assert METRICS["uv_error_unseen"](ctx) == pytest.approx(float(mae[:, ~seen].mean()), abs=1e-6)


def test_novel_views_place_the_meshes_as_novel_view_iou_does_and_are_rendered_once(template, samples, monkeypatch):
    """A wrong camera with the true mesh and texture: the input view differs, the novel views (each mesh
    centred, at novel_view_scale, whatever the camera) do not. novel_view_iou and both novel-view
    metrics share one turntable per mesh."""
    sample = samples[0]
    camera = sample.camera.clone()
    camera[1] += 0.2
    renders = []
    render_turntable = metrics.render_turntable
    monkeypatch.setattr(metrics, "render_turntable", lambda *a, **k: renders.append(1) or render_turntable(*a, **k))
    ctx = context(template, sample, record_for(sample, camera=camera))
    assert METRICS["novel_view_iou"](ctx) == 1.0
    assert METRICS["psnr_novel_views"](ctx) == PSNR_CEILING_DB and METRICS["ssim_novel_views"](ctx) == 1.0
    assert len(renders) == 2  # the prediction's and the ground truth's
    assert METRICS["psnr_input_view"](ctx) < 30 and METRICS["ssim_input_view"](ctx) < 0.9


def test_without_ground_truth_each_metric_names_what_is_missing(template, samples):
    sample = samples[0]
    for gt, missing in (({}, "vertices|texture"), ({k: v for k, v in sample.gt.items() if k != "texture"}, "texture")):
        ctx = context(template, sample, record_for(sample), gt=gt)
        for name in APPEARANCE:
            with pytest.raises(MissingInputError, match=rf"{name}: needs ground truth gt\['({missing})'\]"):
                METRICS[name](ctx)
    no_camera = EvaluationContext(record_for(sample), template, MeshRenderer(SIZE), EvaluationConfig(),
                                  target_mask=sample.mask, gt=sample.gt)
    for name in ("psnr_input_view", "uv_error_seen"):
        with pytest.raises(MissingInputError, match="ground-truth camera"):
            METRICS[name](no_camera)
    # novel_view_iou needs no texture: the ground truth's silhouettes alone.
    shape_only = {k: v for k, v in sample.gt.items() if k != "texture"}
    assert METRICS["novel_view_iou"](context(template, sample, record_for(sample), gt=shape_only)) == 1.0


@requires_cuda
def test_the_metrics_on_cuda_match_cpu(template, samples):
    """Textures and masks stay on the evaluation's device; the values agree with the CPU's up to edge
    pixels that float rounding may flip between the rasterisers."""
    sample = samples[0]
    record = record_for(sample, texture=sample.gt["texture"] * 0.8 + 0.1)
    cpu = values(context(template, sample, record))
    device = torch.device(CUDA_DEVICE)
    cuda = values(EvaluationContext(record, MeshTemplate.uv_sphere().to(device), MeshRenderer(SIZE),
                                    EvaluationConfig(novel_view_size=40), target_mask=sample.mask, gt=sample.gt,
                                    gt_camera=sample.camera, device=device))
    assert cuda == pytest.approx(cpu, rel=1e-3, abs=1e-4)
