"""Losses: fixtures of the original formulas, tiled search vs a dense reference, gradients, batching,
VGG weight handling, and the regularisers."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from meshinv.geometry.camera import quaternion_to_matrix
from meshinv.geometry.mesh_ops import face_adjacency
from meshinv.geometry.template import MeshTemplate
from meshinv.losses import (
    DEFAULT_CHUNK_SIZE,
    VGG19_WEIGHTS_FILE,
    PointSet,
    VGGFeatures,
    chamfer_mask_loss,
    feature_chamfer_texture_loss,
    image_point_set,
    imagenet_normalise,
    latent_nll,
    pixel_chamfer_texture_loss,
    point_set_from_mask,
    smoothness_loss,
    vgg19_relu3_1,
)
from meshinv.losses.chamfer import _min_along_rows
from meshinv.utils import weights as weights_module
from meshinv.utils.weights import MissingWeightsError

from conftest import reference_files

CHAMFER_FIXTURES = reference_files("chamfer_losses_seed*.npz")


# -- dense reference: the whole cost matrix, written straight from docs/method.md section 7 -------------------

def dense_texture_cost(pos_a, val_a, pos_b, val_b, xy_threshold=0.16, k=1.0, alpha=1.0, rgb_eps=1.0):
    """(B, P, Q) cost matrix D = w(D_s) (D_c + rgb_eps), spatial term not differentiated."""
    spatial = ((pos_a[:, :, None] - pos_b[:, None]) ** 2).sum(-1).detach()
    value = ((val_a[:, :, None] - val_b[:, None]) ** 2).sum(-1)
    eps = 1 - (2 * k * xy_threshold) ** 2
    if eps == 1:
        weight = (1 + k * spatial) ** alpha
    else:
        weight = F.relu((eps + k * spatial) ** alpha - 1) + 1
    return weight * (value + rgb_eps)


def dense_pixel_loss(pos_a, val_a, pos_b, val_b, **kw):
    return dense_texture_cost(pos_a, val_a, pos_b, val_b, **kw).min(2).values.mean(1)


def dense_feature_loss(pos_a, val_a, pos_b, val_b, **kw):
    cost = dense_texture_cost(pos_a, val_a, pos_b, val_b, **kw)
    return (cost.min(2).values.mean(1) + cost.min(1).values.mean(1)) / 2


def dense_mask_loss(a, b):
    cost = ((a[:, :, None] - b[:, None]) ** 2).sum(-1)
    return cost.min(2).values.mean(1) + cost.min(1).values.mean(1)


def random_sets(seed, batch, num_a, num_b, channels, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    make = lambda *shape: (torch.rand(*shape, generator=g, dtype=torch.float64) * 2 - 1)  # noqa: E731
    tensors = [make(batch, num_a, 2), make(batch, num_a, channels), make(batch, num_b, 2), make(batch, num_b, channels)]
    return [t.requires_grad_(requires_grad) for t in tensors]


# -- fixtures of the original implementation -------------------------------------------------------

@pytest.mark.skipif(not CHAMFER_FIXTURES, reason="no chamfer_losses_seed*.npz in MESHINV_REFERENCE_DIR")
@pytest.mark.parametrize("path", CHAMFER_FIXTURES, ids=lambda p: p.name)
def test_losses_reproduce_original_fixtures(path):
    data = {key: torch.from_numpy(np.asarray(value)) for key, value in np.load(path).items()}
    assert int(data["seed"]) == int(path.stem.split("seed")[-1])
    for threshold in (0.16, 0.0):
        pixel = pixel_chamfer_texture_loss(data["pos_pred"], data["rgb_pred"], data["pos_target"], data["rgb_target"],
                                           xy_threshold=threshold)
        feature = feature_chamfer_texture_loss(data["feat_pos_pred"], data["feat_pred"], data["feat_pos_target"],
                                               data["feat_target"], xy_threshold=threshold)
        assert pixel.dtype == torch.float64 and pixel.shape == (1,)
        torch.testing.assert_close(pixel, data[f"pixel_ct_loss_thr{threshold}"], atol=1e-6, rtol=0)
        torch.testing.assert_close(feature, data[f"feat_ct_loss_thr{threshold}"], atol=1e-6, rtol=0)
    mask = chamfer_mask_loss(data["pos_pred"], data["pos_target"])
    torch.testing.assert_close(mask, data["chamfer_mask_loss"], atol=1e-6, rtol=0)


# -- tiled search == dense reference -------------------------------------------------------------

@pytest.mark.parametrize("chunk_size", [1, 1000, 8192, DEFAULT_CHUNK_SIZE])
def test_tiled_losses_equal_dense_reference_values_and_gradients(chunk_size):
    # 200 references: several column blocks (64 or 128 wide, plus a ragged last one) for the
    # small chunk sizes, one block for the default.
    for name, ours, dense, channels in [
        ("pixel", pixel_chamfer_texture_loss, dense_pixel_loss, 3),
        ("feature", feature_chamfer_texture_loss, dense_feature_loss, 8),
    ]:
        inputs = random_sets(1, 2, 23, 200, channels)
        value = ours(*inputs, xy_threshold=0.16, chunk_size=chunk_size)
        grads = torch.autograd.grad(value.sum(), inputs, allow_unused=True)
        reference = dense(*inputs, xy_threshold=0.16)
        reference_grads = torch.autograd.grad(reference.sum(), inputs, allow_unused=True)
        torch.testing.assert_close(value, reference, atol=1e-12, rtol=0, msg=name)
        for got, want in zip(grads, reference_grads):
            if want is None or not want.any():  # positions: not differentiated
                assert got is None or not got.any(), name
            else:
                torch.testing.assert_close(got, want, atol=1e-12, rtol=0, msg=name)

    pred, _, target, _ = random_sets(2, 2, 23, 200, 1)
    value = chamfer_mask_loss(pred, target, chunk_size=chunk_size)
    reference = dense_mask_loss(pred, target)
    torch.testing.assert_close(value, reference, atol=1e-12, rtol=0)
    for got, want in zip(torch.autograd.grad(value.sum(), (pred, target)),
                         torch.autograd.grad(reference.sum(), (pred, target))):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


def test_grouped_row_minimum_matches_torch_min_including_ties():
    g = torch.Generator().manual_seed(7)
    cost = torch.randint(0, 20, (2, 5, 256), generator=g).float()  # many ties
    values, indices = _min_along_rows(cost)
    expected = cost.min(dim=2)
    assert torch.equal(values, expected.values) and torch.equal(indices, expected.indices)


def test_float32_tiled_search_matches_float64_dense():
    inputs = random_sets(3, 1, 500, 600, 3, requires_grad=False)
    reference = dense_pixel_loss(*inputs)
    value = pixel_chamfer_texture_loss(*[t.float() for t in inputs], chunk_size=4096)
    torch.testing.assert_close(value.double(), reference, atol=1e-5, rtol=1e-5)


def test_gradcheck_on_tiny_inputs():
    # fast_mode checks random projections of the Jacobian (few evaluations); the full gradients are
    # compared with the dense reference's above.
    pos_a, val_a, pos_b, val_b = random_sets(4, 2, 4, 5, 3)
    check = lambda fn, inputs: torch.autograd.gradcheck(fn, inputs, fast_mode=True)  # noqa: E731
    assert check(lambda a, b: pixel_chamfer_texture_loss(pos_a, a, pos_b, b, chunk_size=3), (val_a, val_b))
    assert check(lambda a, b: feature_chamfer_texture_loss(pos_a, a, pos_b, b, xy_threshold=0.0, chunk_size=3),
                 (val_a, val_b))
    assert check(lambda a, b: chamfer_mask_loss(a, b, chunk_size=3), (pos_a, pos_b))
    # The spatial weight does not pass gradients to the texture losses' positions (docs/method.md section 7).
    pos_a.grad = None
    pixel_chamfer_texture_loss(pos_a, val_a, pos_b, val_b).sum().backward()
    assert pos_a.grad is None or not pos_a.grad.any()


# -- batches with different point counts ---------------------------------------------------------

def test_batched_values_equal_one_by_one():
    g = torch.Generator().manual_seed(5)
    pred_counts, target_counts = [17, 40, 9], [33, 12, 50]
    make = lambda n, c: torch.rand(n, c, generator=g, dtype=torch.float64) * 2 - 1  # noqa: E731
    pred = [(make(n, 2), make(n, 3)) for n in pred_counts]
    target = [(make(n, 2), make(n, 3)) for n in target_counts]
    batch_pred = PointSet.from_lists([p for p, _ in pred], [c for _, c in pred])
    batch_target = PointSet.from_lists([p for p, _ in target], [c for _, c in target])
    assert batch_pred.counts.tolist() == pred_counts

    for loss in (pixel_chamfer_texture_loss, feature_chamfer_texture_loss):
        batched = loss(batch_pred.positions, batch_pred.values, batch_target.positions, batch_target.values,
                       pred_valid=batch_pred.valid, target_valid=batch_target.valid, chunk_size=50)
        from_lists = loss([p for p, _ in pred], [c for _, c in pred], [p for p, _ in target], [c for _, c in target])
        single = torch.cat([loss(p[None], c[None], tp[None], tc[None]) for (p, c), (tp, tc) in zip(pred, target)])
        assert batched.shape == (3,)
        torch.testing.assert_close(batched, single, atol=1e-12, rtol=0)
        torch.testing.assert_close(from_lists, single, atol=1e-12, rtol=0)

    batched = chamfer_mask_loss(batch_pred.positions, batch_target.positions, pred_valid=batch_pred.valid,
                                target_valid=batch_target.valid)
    single = torch.cat([chamfer_mask_loss(p[None], tp[None]) for (p, _), (tp, _) in zip(pred, target)])
    torch.testing.assert_close(batched, single, atol=1e-12, rtol=0)


def test_empty_point_sets_give_zero_and_finite_gradients():
    image = torch.rand(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(2, 1, 8, 8, dtype=torch.float64)
    mask[0, :, 2:5, 3:6] = 1  # the second image's prediction is empty
    pred = image_point_set(image, mask)
    target = image_point_set(torch.rand(2, 3, 8, 8, dtype=torch.float64), torch.ones(2, 1, 8, 8, dtype=torch.float64))
    loss = pixel_chamfer_texture_loss(pred.positions, pred.values, target.positions, target.values,
                                      pred_valid=pred.valid, target_valid=target.valid)
    assert loss[0] > 0 and loss[1] == 0
    loss.sum().backward()
    assert torch.isfinite(image.grad).all() and image.grad[1].abs().sum() == 0
    assert (chamfer_mask_loss(torch.zeros(1, 0, 2), torch.rand(1, 5, 2)) == 0).all()


# -- point sets from images ----------------------------------------------------------------------

def test_image_point_set_uses_every_foreground_pixel_centre_in_raster_order():
    image = torch.arange(2 * 3 * 4 * 6, dtype=torch.float64).reshape(2, 3, 4, 6).requires_grad_(True)
    mask = torch.zeros(2, 1, 4, 6)
    mask[0, 0, 1, 2] = mask[0, 0, 3, 0] = mask[0, 0, 3, 5] = 1
    mask[1, 0, 0, 0] = 1
    points = image_point_set(image, mask)
    assert points.counts.tolist() == [3, 1]
    rows, cols = torch.tensor([1, 3, 3]), torch.tensor([2, 0, 5])
    expected = torch.stack([(2 * cols + 1) / 6 - 1, 1 - (2 * rows + 1) / 4], -1).double()
    torch.testing.assert_close(points.positions[0], expected)
    torch.testing.assert_close(points.values[0], image[0][:, rows, cols].T)
    assert points.valid[1].tolist() == [True, False, False]
    points.values.sum().backward()
    assert image.grad.sum() == 3 * 4  # 4 foreground pixels x 3 channels
    assert point_set_from_mask(mask).values.shape == (2, 3, 0)


# -- VGG -----------------------------------------------------------------------------------------

def _no_weight_files(monkeypatch, tmp_path):
    monkeypatch.setenv("MESHINV_PRETRAINED_DIR", str(tmp_path / "pretrained"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(weights_module, "REPO_ROOT", tmp_path / "repo")


def test_vgg_weight_file_name_is_torchvisions():
    torchvision = pytest.importorskip("torchvision")
    assert torchvision.models.VGG19_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1] == VGG19_WEIGHTS_FILE


def test_vgg_missing_weights_error_names_the_file(monkeypatch, tmp_path):
    _no_weight_files(monkeypatch, tmp_path)
    with pytest.raises(MissingWeightsError, match=VGG19_WEIGHTS_FILE.replace(".", r"\.")) as error:
        VGGFeatures()
    assert str(tmp_path / "pretrained") in str(error.value)


def test_vgg_random_weights_only_on_request_with_a_warning(monkeypatch, tmp_path, caplog):
    _no_weight_files(monkeypatch, tmp_path)
    with caplog.at_level(logging.WARNING, logger="meshinv.losses.vgg"):
        vgg = VGGFeatures(allow_random_weights=True)
    assert not vgg.pretrained
    assert any(r.levelno == logging.WARNING and "RANDOM" in r.getMessage() for r in caplog.records)
    assert not any(p.requires_grad for p in vgg.parameters())

    image = (torch.rand(2, 3, 16, 16) * 2 - 1).requires_grad_(True)
    mask = torch.zeros(2, 1, 16, 16)
    mask[0, :, 0:8, 4:12] = 1   # cells rows 0-1, cols 1-2
    mask[1, :, 6:10, 6:10] = 1  # a quarter of cells (1,1),(1,2),(2,1),(2,2): none kept
    features = vgg(image, mask)
    assert features.shape == (2, 256, 4, 4)
    points = vgg.point_set(image, mask)
    assert points.counts.tolist() == [4, 0]
    cell_x = (2 * torch.tensor([1, 2, 1, 2]) + 1) / 4 - 1
    cell_y = 1 - (2 * torch.tensor([0, 0, 1, 1]) + 1) / 4
    torch.testing.assert_close(points.positions[0], torch.stack([cell_x, cell_y], -1))
    torch.testing.assert_close(points.values[0].norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(points.values[0, 0], F.normalize(features[0, :, 0, 1], dim=0))
    target = vgg.point_set(image.detach().flip(-1), mask)
    loss = feature_chamfer_texture_loss(points.positions, points.values, target.positions, target.values,
                                        pred_valid=points.valid, target_valid=target.valid)
    loss[0].backward()
    assert image.grad[0].abs().sum() > 0


def test_vgg_loads_torchvision_weight_file(monkeypatch, tmp_path):
    _no_weight_files(monkeypatch, tmp_path)
    trunk = vgg19_relu3_1()
    state = {f"features.{key}": value for key, value in trunk.state_dict().items()}
    state["features.12.weight"] = torch.zeros(1)  # later layers and the classifier are ignored
    state["classifier.0.weight"] = torch.zeros(1)
    (tmp_path / "pretrained").mkdir()
    torch.save(state, tmp_path / "pretrained" / VGG19_WEIGHTS_FILE)
    vgg = VGGFeatures()
    assert vgg.pretrained
    for key, value in trunk.state_dict().items():
        torch.testing.assert_close(vgg.trunk.state_dict()[key], value)
    # The mask multiplies the ImageNet-normalised image, so masked-out pixels are 0, not -mean/std.
    image = torch.rand(1, 3, 8, 8) * 2 - 1
    mask = torch.zeros(1, 1, 8, 8)
    expected = trunk(torch.zeros(1, 3, 8, 8))
    torch.testing.assert_close(vgg(image, mask), expected)


def test_vgg_channels_last_trunk_matches_the_plain_layout(monkeypatch, tmp_path):
    """The trunk runs on channels-last activations for speed; features and the image's gradient
    are those of the same weights in the plain (NCHW) layout, to float rounding."""
    _no_weight_files(monkeypatch, tmp_path)
    vgg = VGGFeatures(allow_random_weights=True)
    plain = vgg19_relu3_1()
    plain.load_state_dict(vgg.trunk.state_dict())
    image = torch.rand(2, 3, 24, 24, dtype=torch.float64) * 2 - 1
    mask = (torch.rand(2, 1, 24, 24) > 0.3).double()
    vgg, plain = vgg.double(), plain.double()
    grads = []
    for forward in (lambda x: vgg(x, mask), lambda x: plain(imagenet_normalise(x) * mask)):
        x = image.clone().requires_grad_(True)
        features = forward(x)
        features.square().sum().backward()
        grads.append((features.detach(), x.grad))
    assert vgg.trunk[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-10, atol=1e-10)


# -- regularisers --------------------------------------------------------------------------------

def octahedron():
    vertices = torch.tensor([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=torch.float64)
    faces = []
    for sx, x in ((1, 0), (-1, 1)):
        for sy, y in ((1, 2), (-1, 3)):
            for sz, z in ((1, 4), (-1, 5)):
                faces.append([x, y, z] if sx * sy * sz > 0 else [x, z, y])  # outward winding
    return vertices, torch.tensor(faces)


def test_smoothness_of_octahedron_is_exact():
    vertices, faces = octahedron()
    # Neighbouring normals meet at cos = 1/3: F/2 * 3 * (1/3 - 1)^2 = 4 * 3 * 4/9 = 16/3.
    torch.testing.assert_close(smoothness_loss(vertices[None], faces, face_adjacency(faces)),
                               torch.tensor([16 / 3], dtype=torch.float64))


def test_smoothness_invariances_noise_and_batching():
    template = MeshTemplate.uv_sphere().double()
    faces, neighbours = template.faces, template.face_neighbours
    sphere = template.vertices[None]
    g = torch.Generator().manual_seed(6)
    rotation = quaternion_to_matrix(torch.randn(1, 4, generator=g, dtype=torch.float64))
    moved = 2.5 * sphere @ rotation.transpose(1, 2) + torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    noisy = sphere + 0.05 * torch.randn(sphere.shape, generator=g, dtype=torch.float64)
    batch = torch.cat([sphere, moved, noisy])
    loss = smoothness_loss(batch, faces, neighbours)
    assert loss.shape == (3,) and (loss > 0).all()
    torch.testing.assert_close(loss[1], loss[0])
    assert loss[2] > 5 * loss[0]
    torch.testing.assert_close(loss[2:], smoothness_loss(noisy, faces, neighbours))


def test_latent_nll():
    z = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    torch.testing.assert_close(latent_nll(z), torch.tensor([1.0, 0.5]))
