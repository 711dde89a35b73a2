"""The loss ablation's alternatives (docs/method.md section 7): the masked L1 and contextual texture
losses, the soft-IoU (rasterised) mask loss, and their options in the inversion objective.

Every property here holds by construction or is derived in the test's docstring; the contextual
loss is also checked against its definition computed densely and against finite differences."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import CUDA_DEVICE, requires_cuda
from meshinv.geometry.camera import WeakPerspectiveCamera
from meshinv.geometry.template import MeshTemplate
from meshinv.inversion import InversionLossConfig, InversionObjective, Inverter
from meshinv.inversion.output import ADDED_SETTINGS, OutputFolder, OutputFolderError
from meshinv.losses import contextual_loss, image_point_set, masked_l1_loss, soft_iou_loss
from meshinv.losses.contextual import ContextualSimilarity
from meshinv.render import MeshRenderer
from meshinv.utils.config import to_dict
from test_inversion import SIZE, samples, split, stack, tiny_config, tiny_generator  # noqa: F401 (fixtures)

# -- masked L1 -------------------------------------------------------------------------------------


def test_l1_is_zero_for_identical_images_and_a_constant_offset_for_shifted_ones():
    torch.manual_seed(0)
    target = torch.rand(3, 3, 16, 16) * 2 - 1
    mask = (torch.rand(3, 1, 16, 16) > 0.5).float()
    assert torch.equal(masked_l1_loss(target, target, mask), torch.zeros(3))
    offsets = torch.tensor([0.25, -0.5, 0.125])  # |(t + c) - t| = |c| up to the rounding of t + c
    shifted = target + offsets[:, None, None, None]
    assert torch.allclose(masked_l1_loss(shifted, target, mask), offsets.abs(), rtol=1e-6, atol=0)
    # Only the mask's pixels count: the rendering outside it is free.
    elsewhere = torch.where(mask > 0.5, shifted, torch.full_like(shifted, 7.0))
    assert torch.equal(masked_l1_loss(elsewhere, target, mask), masked_l1_loss(shifted, target, mask))
    assert masked_l1_loss(shifted, target, torch.zeros_like(mask)).eq(0).all()  # an empty mask: nothing to compare


# -- the contextual loss ---------------------------------------------------------------------------


def dense_contextual_loss(x: torch.Tensor, y: torch.Tensor, h: float = 0.5, eps: float = 1e-5) -> torch.Tensor:
    """Mechrez et al. 2018 eq. 1-4 written out with the whole matrix: rows i are predictions,
    columns j targets; both normalisations of row i run over the targets."""
    centre = y.mean(dim=0, keepdim=True)
    d = 1 - F.normalize(x - centre, dim=-1) @ F.normalize(y - centre, dim=-1).T
    relative = d / (d.min(dim=1, keepdim=True).values + eps)
    w = torch.exp((1 - relative) / h)
    cx = w / w.sum(dim=1, keepdim=True)
    return -torch.log(cx.max(dim=0).values.mean())


def random_sets(counts, channels=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, channels, generator=generator, dtype=torch.float64) for n in counts]


@pytest.mark.parametrize("bandwidth, eps", [(0.5, 1e-5), (0.2, 0.1)])
def test_contextual_loss_is_its_definition_in_tiles_with_padding(bandwidth, eps):
    """Padded batches of different sizes, in tiles of a few rows (chunk_size 16), give each image's
    dense value and gradients, float64 to rounding."""
    preds = [p.requires_grad_() for p in random_sets((7, 3, 11), seed=1)]
    targets = [t.requires_grad_() for t in random_sets((5, 9, 2), seed=2)]
    ours = contextual_loss(preds, targets, bandwidth=bandwidth, eps=eps, chunk_size=16)
    dense = torch.stack([dense_contextual_loss(x, y, bandwidth, eps) for x, y in zip(preds, targets)])
    assert torch.allclose(ours, dense, rtol=1e-12, atol=1e-14)
    ours_grad = torch.autograd.grad(ours.sum(), preds + targets)
    dense_grad = torch.autograd.grad(dense.sum(), preds + targets)
    for a, b in zip(ours_grad, dense_grad):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


def test_contextual_backward_matches_finite_differences():
    """The hand-derived backward of the tiled similarity, against gradcheck's finite differences
    (generic points: every min and max has a unique winner)."""
    u = F.normalize(torch.randn(2, 6, 3, dtype=torch.float64), dim=-1).requires_grad_()
    v = F.normalize(torch.randn(2, 5, 3, dtype=torch.float64), dim=-1).requires_grad_()
    pred_valid = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    target_valid = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    assert torch.autograd.gradcheck(
        lambda a, b: ContextualSimilarity.apply(a, b, pred_valid, target_valid, 0.5, 0.05, 10), (u, v))


def test_contextual_loss_of_a_set_with_itself_is_its_minimum():
    """CX_ij <= 1, so L >= 0. For Y against itself, d_jj = 0, so d~_jj = 0 and
    CX_jj = 1 / sum_k exp(-d_jk / (h eps)): with pairwise cosine distances >= delta between the
    targets, L(Y, Y) <= log(1 + (Q - 1) exp(-delta / (h eps))), i.e. 0 to float64 here.
    A target direction repeated m_j times gives target columns that are equal, and each row of CX
    sums to 1, so max_i CX_ij <= 1 / m_j for every prediction: L >= -log(mean_j 1 / m_j), which
    Y itself attains."""
    targets = random_sets((6,), seed=3)[0]
    centred = F.normalize(targets - targets.mean(0), dim=-1)
    delta = float((1 - centred @ centred.T + 3 * torch.eye(6, dtype=torch.float64)).min())
    bound = math.log1p(5 * math.exp(-delta / (0.5 * 1e-5)))
    assert 0 <= float(contextual_loss(targets[None], targets[None])) <= bound + 1e-15

    # Two exact copies of target 0 and one of target 1 (multiplicities 3, 3, 3, 2, 2, 1, 1, 1, 1).
    repeated = torch.cat([targets, targets[:1], targets[:2]])
    multiplicity = torch.tensor([3, 2, 1, 1, 1, 1, 3, 3, 2], dtype=torch.float64)
    minimum = -math.log(float((1 / multiplicity).mean()))
    assert float(contextual_loss(repeated[None], repeated[None])) == pytest.approx(minimum, rel=1e-12)
    for prediction in random_sets((9, 4, 20), seed=4):
        assert float(contextual_loss(prediction[None], repeated[None])) >= minimum - 1e-12


def test_contextual_loss_ignores_the_order_of_either_set():
    """Means, minima, maxima and sums over a set do not depend on its order (nor do the padding's
    places)."""
    preds, targets = random_sets((8, 5), seed=5), random_sets((6, 9), seed=6)
    loss = contextual_loss(preds, targets)
    generator = torch.Generator().manual_seed(7)
    shuffled_preds = [p[torch.randperm(len(p), generator=generator)] for p in preds]
    shuffled_targets = [t[torch.randperm(len(t), generator=generator)] for t in targets]
    assert torch.allclose(contextual_loss(shuffled_preds, targets), loss, rtol=1e-12, atol=0)
    assert torch.allclose(contextual_loss(preds, shuffled_targets), loss, rtol=1e-12, atol=0)
    assert contextual_loss(preds, targets)[0] == contextual_loss(preds[:1], targets[:1])[0]


def test_contextual_loss_falls_as_a_prediction_turns_onto_its_target():
    """Targets: 4 colours on a circle about their mean, 90 degrees apart; the prediction: the same
    circle turned by theta < 45 degrees. Every row then sees, relative to its own target
    (m = 1 - cos theta), the others at d - m = cos - sin, cos + sin and 2 cos; by symmetry the
    winner of column j is row j, so L = log(1 + sum_k exp(-(d_k - m) / ((m + eps) h))). Each
    (d_k - m) / (m + eps) grows as theta falls (for (cos + sin) / (1 - cos + eps) the derivative's
    sign is that of (1 + eps)(cos - sin) - 1 < 0), so L falls strictly towards 0."""
    h, eps = 0.5, 1e-5
    angles = torch.tensor([0.0, 90.0, 180.0, 270.0], dtype=torch.float64).deg2rad()
    centre = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)

    def circle(turn_deg: float, radius: float) -> torch.Tensor:
        a = angles + math.radians(turn_deg)
        return centre + radius * torch.stack([a.cos(), a.sin(), torch.zeros_like(a)], dim=-1)

    target = circle(0.0, 0.5)
    values = []
    for theta in (44.0, 40.0, 32.0, 24.0, 18.0, 14.0):
        loss = float(contextual_loss(circle(theta, 0.3)[None], target[None], bandwidth=h, eps=eps))
        t = math.radians(theta)
        m = 1 - math.cos(t)
        gaps = (math.cos(t) - math.sin(t), math.cos(t) + math.sin(t), 2 * math.cos(t))
        assert loss == pytest.approx(math.log1p(sum(math.exp(-g / ((m + eps) * h)) for g in gaps)), rel=1e-9)
        values.append(loss)
    assert all(later < earlier for earlier, later in zip(values, values[1:])), values
    assert float(contextual_loss(target[None], target[None])) == 0.0


def test_contextual_loss_of_an_empty_side_is_zero_and_keeps_the_graph():
    pred = torch.randn(2, 4, 3, requires_grad=True)
    loss = contextual_loss(pred, torch.randn(2, 5, 3), target_valid=torch.tensor([[True] * 5, [False] * 5]))
    assert loss[1] == 0 and loss[0] > 0
    loss.sum().backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[1].eq(0).all()


# -- the soft-IoU mask loss ------------------------------------------------------------------------


def square(x0: float, x1: float, y0: float, y1: float) -> tuple[torch.Tensor, torch.Tensor]:
    """An axis-aligned square in NDC as two triangles: (1, 4, 3) vertices, (2, 3) faces."""
    vertices = torch.tensor([[[x0, y0, 0.0], [x1, y0, 0.0], [x1, y1, 0.0], [x0, y1, 0.0]]])
    return vertices, torch.tensor([[0, 1, 2], [0, 2, 3]])


def test_soft_iou_loss_is_zero_for_the_mask_itself_and_one_for_disjoint_ones():
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, :, 0:3, 1:6] = 1  # rows 5-7 once flipped: disjoint
    mask[1, :, 6:, :] = 1
    assert torch.equal(soft_iou_loss(mask, mask), torch.zeros(2))
    assert torch.equal(soft_iou_loss(mask, mask.flip(-2)), torch.ones(2))
    assert torch.equal(soft_iou_loss(torch.zeros_like(mask), torch.zeros_like(mask)), torch.zeros(2))


@pytest.mark.parametrize("sigma", [2e-4, 1e-5])
def test_a_rendered_silhouette_scores_zero_up_to_its_softness(sigma):
    """A square whose edges lie on pixel boundaries against its own hard mask M. For a {0, 1} mask,
    L = sum |s - m| / union <= sum |s - m| / |M|. Inside, each covered pixel has s >= 1 - 1e-6 (the
    face probability's clamp) less float32 rounding near 1 (the clamp's constant and 1 - exp(log(1 -
    p)), each within one eps = 2^-23); outside, a pixel centre at distance d from the square is at least d
    from both faces, so s <= 1 - (1 - exp(-d^2 / sigma))^2. Far from the mask (beyond the
    silhouette's reach) the silhouette is exactly 0, so L = 1."""
    size = 32
    renderer = MeshRenderer(size, sigma=sigma)
    vertices, faces = square(-0.5, 0.5, -0.25, 0.5)  # pixel boundaries are at multiples of 2 / 32
    mask = renderer.rasterize(vertices, faces).mask
    silhouette = renderer.soft_silhouette(vertices, faces)
    centres = (torch.arange(size) * 2 + 1) / size - 1
    x, y = centres[None, :], -centres[:, None]
    distance = torch.hypot((x.abs() - 0.5).clamp_min(0), (y - 0.125).abs().sub(0.375).clamp_min(0))
    outside = 1 - (1 - torch.exp(-distance ** 2 / sigma)) ** 2
    bound = float((outside * (1 - mask[0, 0])).sum() / mask.sum()) + 1e-6 + 2 * torch.finfo(torch.float32).eps
    loss = float(soft_iou_loss(silhouette, mask))
    assert int(mask.sum()) == 16 * 12 and 0 <= loss <= bound, (loss, bound)
    assert bound < (1e-2 if sigma == 2e-4 else 1e-5)
    far = torch.zeros_like(mask)
    far[..., :4] = 1  # columns 0-3 end at x = -0.75, 0.25 from the square: beyond its reach
    assert math.sqrt(sigma * math.log(1e4)) < 0.25 and float(soft_iou_loss(silhouette, far)) == 1.0


# -- the options in the objective ------------------------------------------------------------------


def objective_case(samples, device="cpu", dtype=torch.float32, **loss):
    template, generator = MeshTemplate.uv_sphere().to(device, dtype), tiny_generator()
    cfg = InversionLossConfig(feature_weight=0.0, nll_weight=0.0, **loss)
    objective = InversionObjective(template, MeshRenderer(SIZE), cfg)
    images, masks, cameras, classes, _ = stack(samples)
    with torch.no_grad():
        texture, mesh_map = generator(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), classes)
    texture, mesh_map = texture.to(device, dtype).requires_grad_(), mesh_map.to(device, dtype)
    images, masks = images.to(device, dtype), masks.to(device)
    cameras = cameras.to(device, dtype).requires_grad_()
    out = objective(torch.zeros(3, 8, device=device, dtype=dtype), texture, mesh_map, cameras,
                    objective.prepare(images, masks))
    return objective, out, texture, cameras, template, mesh_map, images, masks


@pytest.mark.parametrize("texture_loss", ["l1", "contextual"])
def test_the_texture_option_chooses_the_pixel_term_and_reaches_the_texture(samples, texture_loss):
    """The pixel term is pixel_weight times the chosen loss: l1 on the rendering as drawn (background
    0 where it leaves the target mask uncovered), contextual on the two foregrounds' colours."""
    objective, out, texture, cameras, *_, images, masks = objective_case(
        samples, texture_loss=texture_loss, mask_weight=0.0, pixel_weight=2.0)
    assert set(out.terms) == {"pixel"}
    assert out.render.image.masked_select(out.render.mask.expand_as(out.render.image) < 0.5).eq(0).all()
    if texture_loss == "l1":
        expected = masked_l1_loss(out.render.image, images, masks)
    else:
        rendered, target = image_point_set(out.render.image, out.render.mask), image_point_set(images, masks)
        expected = contextual_loss(rendered.values, target.values, pred_valid=rendered.valid,
                                   target_valid=target.valid)
    assert torch.allclose(out.terms["pixel"], 2.0 * expected, rtol=1e-6, atol=0)
    out.total.sum().backward()
    for grad in (texture.grad, cameras.grad):
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_the_raster_mask_option_is_the_soft_iou_of_the_soft_silhouette_and_moves_the_geometry(samples):
    objective, out, texture, cameras, template, mesh_map, images, masks = objective_case(
        samples, mask_loss="raster", pixel_weight=0.0)
    assert set(out.terms) == {"mask"}
    ndc = WeakPerspectiveCamera.from_tensor(cameras).transform(template.vertex_positions(mesh_map))
    expected = soft_iou_loss(objective.renderer.soft_silhouette(ndc, template.faces), masks)
    assert torch.allclose(out.terms["mask"], 10.0 * expected, rtol=1e-6, atol=0)
    assert ((0 < expected) & (expected < 1)).all()
    out.total.sum().backward()
    assert torch.isfinite(cameras.grad).all() and (cameras.grad.abs().sum(dim=1) > 0).all()


ABLATION_OPTIONS = [{"texture_loss": "l1"}, {"texture_loss": "contextual"}, {"mask_loss": "raster"}]


@requires_cuda
@pytest.mark.parametrize("loss", ABLATION_OPTIONS)
def test_the_ablation_options_agree_with_the_cpu(samples, loss):
    """float64 on both sides: the terms and their gradients agree to rounding (the contextual loss's
    tiles differ, CUDA's being larger, but each row is whole in either)."""
    results = []
    for device in ("cpu", CUDA_DEVICE):
        _, out, texture, cameras, *_ = objective_case(samples, device, torch.float64, **loss)
        out.total.sum().backward()
        results.append([t.detach().cpu() for t in (out.total, texture.grad, cameras.grad)])
    for on_cpu, on_gpu in zip(*results):
        assert torch.allclose(on_gpu, on_cpu, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("loss", ABLATION_OPTIONS)
def test_an_inversion_runs_with_each_ablation_option(samples, loss):
    images, masks, cameras, classes, ids = stack(samples)
    cfg = tiny_config(loss=InversionLossConfig(on_missing_vgg="random", **loss))
    result = Inverter(tiny_generator(), MeshTemplate.uv_sphere(), cfg).invert(images, masks, cameras, classes, ids)
    assert all(result.non_finite(i) is None for i in range(len(ids)))
    assert all({"mask", "pixel", "feature", "nll"} <= set(losses) for losses in result.losses)
    assert all(len(history["total"]) == sum(cfg.iterations) for history in result.history)


def test_the_resume_guard_treats_the_options_as_algorithm_settings(tmp_path):
    """They change results: a re-run with another is refused, naming it. A record written before
    they existed was made with the paper's losses, so it matches those and only those."""
    from meshinv.config import ExperimentConfig

    def experiment(**loss) -> dict:
        cfg = ExperimentConfig()
        cfg.inversion = dataclasses.replace(cfg.inversion, loss=InversionLossConfig(**loss))
        return to_dict(cfg)

    checkpoint = tmp_path / "prior.pt"
    checkpoint.write_bytes(b"weights")
    out = OutputFolder(tmp_path / "out")
    with out.locked():
        out.check_and_record_settings(experiment(), checkpoint)
        (out.path / "done").mkdir()
        (out.path / "done" / "result.pt").write_bytes(b"")
        for change, key in (({"texture_loss": "l1"}, "texture_loss"), ({"mask_loss": "raster"}, "mask_loss"),
                            ({"contextual_bandwidth": 0.1}, "contextual_bandwidth"),
                            ({"contextual_eps": 1e-3}, "contextual_eps")):
            with pytest.raises(OutputFolderError, match=rf"other settings: inversion.loss.{key} \("):
                out.check_and_record_settings(experiment(**change), checkpoint)
        settings = out.path / "settings.json"
        older = {k: v for k, v in json.loads(settings.read_text()).items() if k not in ADDED_SETTINGS}
        settings.write_text(json.dumps(older))
        with pytest.raises(OutputFolderError, match=r'inversion.loss.texture_loss \("chamfer" there, "l1" now\)'):
            out.check_and_record_settings(experiment(texture_loss="l1"), checkpoint)
        out.check_and_record_settings(experiment(), checkpoint)
    assert set(ADDED_SETTINGS) <= set(json.loads(settings.read_text()))
