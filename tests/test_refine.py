"""The refinement after the inversion (meshinv/inversion/refine.py, refine_job.py, scripts/refine.py):
off changes nothing; the texture stage leaves unseen texels as generated, gives squarely seen texels
the image's colour and feathers its weight; the shape stage keeps a symmetric mesh symmetric and
never fits the mask worse; its info lands in result.pt; a finished run folder is refined into one
that scripts/evaluate.py reads; bad settings are named."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from conftest import REPO_ROOT
from meshinv.geometry.camera import WeakPerspectiveCamera
from meshinv.geometry.procedural import smooth_symmetric_map
from meshinv.geometry.template import MeshTemplate
from meshinv.inversion import InversionLossConfig, Inverter, InversionRecord, load_record
from meshinv.inversion.config import RefineConfig, validate_inversion
from meshinv.inversion.output import OutputFolder, OutputFolderError, result_settings
from meshinv.inversion.refine import (
    inward_ramp, mirror_texel_columns, refine_batch, refine_shape, refine_texture,
)
from meshinv.inversion.results import RESULT_FORMAT, RESULT_VERSION
from meshinv.losses import chamfer_mask_loss, image_point_set
from meshinv.models import save_generator_checkpoint
from meshinv.render import MeshRenderer
from meshinv.render.texels import texel_surface
from meshinv.utils.config import SettingError, to_dict
from meshinv.utils.io import save_torch
from test_inversion import SIZE, _script, stack, tiny_config, tiny_generator

IMAGE = 64
# A side view (90 degrees about y) at scale 0.7: the mirror plane is seen edge-on, one side squarely.
SIDE = torch.tensor([[0.7, 0.05, -0.02, 0.7071068, 0.0, 0.7071068, 0.0]])


@pytest.fixture(scope="module")
def template() -> MeshTemplate:
    return MeshTemplate.uv_sphere()


def render(template, vertices, texture, camera=SIDE, size=IMAGE):
    ndc = WeakPerspectiveCamera.from_tensor(camera).transform(vertices)
    out = template.render(MeshRenderer(size), ndc, texture, background=0.0)
    return out.image, out.mask


def known_scene(template, texture_size=64):
    """A sphere stretched along z (a "tail" the start sphere lacks) with a smooth symmetric texture."""
    texture = smooth_symmetric_map(1, 3, texture_size, cells=4, amplitude=0.6,
                                   generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    vertices = template.vertices[None] * torch.tensor([1.0, 1.0, 1.5])
    image, mask = render(template, vertices, texture)
    return texture, vertices, image, mask


# -- off -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    from meshinv.data.preprocess import CropConfig
    from meshinv.data.synthetic import SyntheticDataset
    from meshinv.datagen.synthetic import SyntheticConfig, write_split

    root = tmp_path_factory.mktemp("refine_data")
    split = write_split(SyntheticConfig(image_size=64, texture_size=64, out_dir=str(root), occluder_fraction=0.0),
                        "test", 2)
    dataset = SyntheticDataset(split, CropConfig(img_size=SIZE, mask_threshold=0.95))
    return split, [dataset[i] for i in range(2)]


def test_with_both_stages_off_the_result_is_the_inversions_bitwise(samples, template):
    generator, loss = tiny_generator(), InversionLossConfig(feature_weight=0.0)  # (a random VGG differs per run)
    plain = Inverter(generator, template, tiny_config(loss=loss)).invert(*stack(samples[1]))
    knobs = RefineConfig(steps=3, lr=0.5, feather=1, mirror=False)  # only knobs: both stages off
    off = Inverter(generator, template, tiny_config(loss=loss, refine=knobs)).invert(*stack(samples[1]))
    for name in ("z", "camera", "texture", "mesh_map", "vertices", "render", "render_mask", "iou"):
        assert torch.equal(getattr(plain, name), getattr(off, name)), name
    assert plain.losses == off.losses and off.refine == []


def test_the_inversion_reports_the_refined_result(samples, template):
    generator = tiny_generator()
    cfg = tiny_config(refine=RefineConfig(texture=True, shape=True, steps=3))
    result = Inverter(generator, template, cfg).invert(*stack(samples[1]))
    assert [sorted(info) for info in result.refine] == [sorted(
        ["texture", "shape", "seconds", "iou_before", "iou_after", "mask_loss_before", "mask_loss_after",
         "seen_texels"])] * 2
    masks = torch.stack([s.mask for s in samples[1]])
    image, mask = render(template, result.vertices, result.texture, result.camera, SIZE)
    assert torch.equal(mask, result.render_mask) and torch.allclose(image, result.render, atol=1e-5)
    iou = ((mask > 0.5) & (masks > 0.5)).sum((1, 2, 3)) / ((mask > 0.5) | (masks > 0.5)).sum((1, 2, 3))
    assert torch.allclose(result.iou.double(), iou.double(), atol=1e-6)
    assert [info["iou_after"] for info in result.refine] == pytest.approx(result.iou.tolist())
    assert torch.allclose(result.vertices, template.vertex_positions(result.mesh_map), atol=1e-6)


# -- texture ---------------------------------------------------------------------------------------

def test_the_mirror_columns_are_the_generators_symmetry():
    texture, _ = tiny_generator()(torch.randn(2, 8), torch.tensor([0, 3]))
    assert torch.equal(texture[..., mirror_texel_columns(texture.shape[-1])], texture)


def test_the_inward_ramp_is_zero_outside_and_climbs_at_most_one_step_per_texel():
    support = torch.rand(2, 1, 24, 32, generator=torch.Generator().manual_seed(1)) < 0.8
    support[0, 0, 5:15, :] = True  # a band across the u seam
    width = 3
    ramp = inward_ramp(support, width)
    assert torch.equal(ramp[~support], torch.zeros_like(ramp[~support]))
    assert ramp.min() >= 0 and ramp.max() <= 1 and (ramp[0, 0, 10] == 1).any()
    steps = torch.cat([(ramp - ramp.roll(1, -1)).flatten(), (ramp[..., 1:, :] - ramp[..., :-1, :]).flatten()])
    assert steps.abs().max() <= 1 / width + 1e-6  # u wraps around: column 0 neighbours the last one
    assert torch.equal(ramp * width, (ramp * width).round())


@pytest.mark.parametrize("mirror", [False, True])
def test_the_texture_stage_takes_seen_colours_and_keeps_unseen_texels_exactly(template, mirror):
    true_texture, vertices, image, mask = known_scene(template)
    generated = torch.full_like(true_texture, -0.5)
    cfg = RefineConfig(texture=True, feather=3, mirror=mirror)
    blended, weight = refine_texture(image, mask, SIDE, vertices, generated, template, cfg)
    assert weight.min() >= 0 and weight.max() <= 1
    unseen = (weight == 0).expand_as(blended)
    assert torch.equal(blended[unseen], generated[unseen])   # unseen texels keep the generated colour exactly
    surface_texels = torch.zeros(64 * 64, dtype=torch.bool)
    surface_texels[texel_surface(template, 64).texel] = True
    seen = (weight[0, 0] > 0).flatten()
    assert 0.2 < seen[surface_texels].float().mean() < (0.9 if mirror else 0.6)
    # Squarely seen texels (weight 1) take the image colour, which the renderer read from the true
    # texture: two bilinear readings (texture at pixel centres, image at texel points), each within
    # one texel of the point, so within the texture's largest step between neighbouring texels.
    square = (weight[0, 0] == 1)
    assert square.sum() > 50
    step = max((true_texture - true_texture.roll(1, -1)).abs().max(),
               (true_texture[..., 1:, :] - true_texture[..., :-1, :]).abs().max())
    error = (blended - true_texture).abs().amax(1)[0][square]
    assert error.max() <= 2 * step, (error.max(), step)
    # Feathered: a seen texel next to an unseen one (u wrapping) has a weight of at most 1 / feather.
    w = weight[0, 0]
    border = (w > 0) & ((w.roll(1, -1) == 0) | (w.roll(-1, -1) == 0))
    assert border.any() and w[border].max() <= 1 / 3 + 1e-6


def test_the_texture_strength_scales_the_blend_weight(template):
    _, vertices, image, mask = known_scene(template)
    generated = torch.full((1, 3, 64, 64), -0.5)
    _, full = refine_texture(image, mask, SIDE, vertices, generated, template, RefineConfig(texture=True))
    blended, half = refine_texture(image, mask, SIDE, vertices, generated, template,
                                   RefineConfig(texture=True, texture_strength=0.5))
    assert torch.equal(half, full * 0.5)   # a power of two: exact
    kept, none = refine_texture(image, mask, SIDE, vertices, generated, template,
                                RefineConfig(texture=True, texture_strength=0.0))
    assert none.max() == 0 and torch.equal(kept, generated)
    assert (blended - generated).abs().max() > 0.1


def test_occluded_and_background_pixels_give_no_colour(template):
    _, vertices, image, mask = known_scene(template)
    empty = torch.zeros_like(mask)
    generated = torch.zeros(1, 3, 64, 64)
    blended, weight = refine_texture(image, empty, SIDE, vertices, generated, template, RefineConfig(texture=True))
    assert torch.equal(blended, generated) and weight.max() == 0


# -- shape -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shape_target(template):
    _, _, image, mask = known_scene(template)
    return image, mask, image_point_set(image, mask)


def test_the_shape_stage_fits_the_mask_no_worse_and_keeps_the_mesh_symmetric(template, shape_target):
    _, mask, target = shape_target
    start = torch.zeros(1, 3, 32, 32)
    cfg = RefineConfig(shape=True, steps=30, lr=0.02)
    refined, before, after = refine_shape(start, SIDE, target, template, cfg, chunk_size=2 ** 16)
    # By construction (each image keeps an iterate that fits no worse than the start).
    assert (after <= before).all()
    # The start sphere lacks the stretched target's ends: 30 steps close a good part of the gap.
    assert (after < 0.8 * before).all(), (before, after)
    vertices = template.vertex_positions(refined)
    mirrored = vertices[:, template.pos_index] * torch.tensor([-1.0, 1.0, 1.0])
    assert torch.allclose(vertices[:, template.neg_index], mirrored, atol=1e-6)
    assert torch.equal(refined[..., mirror_texel_columns(32)], refined)  # symmetric, as the generator's maps
    ndc = WeakPerspectiveCamera.from_tensor(SIDE).transform(vertices)
    again = chamfer_mask_loss(ndc[..., :2], target.positions, target_valid=target.valid)
    assert torch.allclose(again, after, rtol=1e-5)


def test_zero_steps_change_nothing(template, shape_target):
    image, mask, target = shape_target
    start = smooth_symmetric_map(1, 3, 32, amplitude=0.05, generator=torch.Generator().manual_seed(2))
    refined, before, after = refine_shape(start, SIDE, target, template, RefineConfig(shape=True, steps=0), 2 ** 16)
    assert torch.equal(refined, start) and torch.equal(before, after)
    texture = torch.zeros(1, 3, 16, 16)
    out = refine_batch(image, mask, SIDE, start, texture, template, RefineConfig(shape=True, steps=0))
    assert torch.equal(out.mesh_map, start) and torch.equal(out.texture, texture)
    assert torch.equal(out.vertices, template.vertex_positions(start))
    assert out.info[0]["iou_before"] == out.info[0]["iou_after"]


# -- records, settings, the script -----------------------------------------------------------------

def test_records_carry_the_refine_info_and_older_records_still_load(tmp_path):
    record = InversionRecord("a", torch.zeros(8), torch.zeros(7), torch.zeros(7), 0, torch.zeros(3, 4, 4),
                             torch.zeros(3, 32, 32), torch.zeros(5, 3), 32, 0.5,
                             refine={"texture": True, "shape": False, "seconds": 0.1})
    record.save(tmp_path / "new.pt")
    assert load_record(tmp_path / "new.pt").refine == {"texture": True, "shape": False, "seconds": 0.1}
    old = record.to_dict()
    del old["refine"]
    save_torch(tmp_path / "old.pt", {**old, "format": RESULT_FORMAT, "format_version": RESULT_VERSION})
    assert load_record(tmp_path / "old.pt").refine == {}


def test_older_folders_resume_with_the_refinement_off_and_refuse_it_on(tmp_path):
    from meshinv.config import ExperimentConfig

    out = OutputFolder(tmp_path / "out")
    (tmp_path / "out" / "img").mkdir(parents=True)
    (tmp_path / "out" / "img" / "result.pt").write_bytes(b"")
    config = to_dict(ExperimentConfig())
    older = {k: v for k, v in result_settings(config).items() if not k.startswith("inversion.refine.")}
    (tmp_path / "out" / "settings.json").write_text(json.dumps(older))
    with out.locked():
        out.check_and_record(result_settings(config))
        config["inversion"]["refine"]["texture"] = True
        with pytest.raises(OutputFolderError, match="inversion.refine.texture"):
            out.check_and_record(result_settings(config))


@pytest.mark.parametrize("key, value, message", [
    ("feather", 0, "inversion.refine.feather must be >= 1"),
    ("steps", -1, "inversion.refine.steps must be >= 0"),
    ("full_facing", 0.1, "inversion.refine.full_facing must be above min_facing"),
    ("min_facing", 1.5, "inversion.refine.min_facing"),
    ("lr", float("nan"), "inversion.refine.lr"),
    ("texture_strength", 1.5, "inversion.refine.texture_strength"),
])
def test_bad_refine_settings_are_named(key, value, message):
    with pytest.raises(SettingError, match=message.replace(".", r"\.")):
        validate_inversion(tiny_config(refine=replace(RefineConfig(), **{key: value})))


def test_the_script_refines_a_run_folder_that_evaluate_reads(samples, tmp_path):
    split, _ = samples
    checkpoint = tmp_path / "prior.pt"
    save_generator_checkpoint(checkpoint, tiny_generator())
    run, out = tmp_path / "run", tmp_path / "refined"
    result = subprocess.run(_script(split, run, checkpoint, "--set", "inversion.iterations=[2,2]",
                                    "--set", "inversion.export.turntable_frames=0"),
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    refine = [sys.executable, "scripts/refine.py", "--run", str(run), "--out", str(out)]
    on = ["--set", "inversion.refine.texture=true", "--set", "inversion.refine.shape=true",
          "--set", "inversion.refine.steps=3"]
    for extra, named in ([[], "both off"], [["--set", "inversion.iterations=[1,1]", *on], "inversion.iterations"]):
        refused = subprocess.run(refine + extra, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert refused.returncode == 1 and named in refused.stderr, refused.stderr
    assert not (out / "test_00000" / "result.pt").exists()
    result = subprocess.run(refine + on, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == 2 and summary["refined_from"] == str(run)
    for image_id in ("test_00000", "test_00001"):
        before, after = load_record(run / image_id), load_record(out / image_id)
        assert after.refine["texture"] and after.refine["shape"] and after.iou == pytest.approx(after.refine["iou_after"])
        assert after.refine["iou_before"] == pytest.approx(before.iou, abs=1e-6)
        assert torch.equal(after.camera, before.camera) and torch.equal(after.z, before.z)
        assert after.seconds == pytest.approx(before.seconds + after.refine["seconds"])
        for name in ("input.png", "target_mask.png", "render.png", "pred_mask.png", "mesh.obj"):
            assert (out / image_id / name).is_file(), name
    evaluation = subprocess.run(
        [sys.executable, "scripts/evaluate.py", "--config", "configs/synthetic.yaml", "--results", str(out),
         "--data", str(split), "--set", "device=cpu", "--set", "evaluation.novel_view_size=32",
         "--set", "evaluation.grid_rows=0"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert evaluation.returncode == 0, evaluation.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["per_image"]) == 2
