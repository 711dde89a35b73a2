"""The Chamfer nearest-neighbour searches.

The exact search decides by the exact pair cost, and its pruned form skips only pairs that cannot
matter: pruned == unpruned == a dense search over the same cost, index for index, and therefore loss
values and gradients bit for bit (torch.equal), on random point sets (with ties, padding and empty
sets) and on real renders and targets.

Where the search does not prune (below PRUNE_MIN_REFERENCES, the mask loss, pruning=False), it
decides by the tiles' expanded-form cost, first minimum in reference order: what a single tile over
all pairs computes, and, where the expanded form is exact, the dense search's choice for any tiling."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import CUDA_DEVICE, requires_cuda
from meshinv.data.preprocess import CropConfig
from meshinv.data.synthetic import SyntheticDataset
from meshinv.datagen.synthetic import SyntheticConfig, write_split
from meshinv.geometry.camera import WeakPerspectiveCamera
from meshinv.geometry.template import MeshTemplate
from meshinv.losses import (
    SpatialWeighting, VGGFeatures, feature_chamfer_texture_loss, image_point_set, nearest_neighbours,
    pixel_chamfer_texture_loss,
)
from meshinv.losses import chamfer
from meshinv.losses.chamfer import _MINIMA_GROUP, _masked_mean, _pair_cost, _pointwise_pow, _row_minima, can_prune
from meshinv.render import make_renderer
from test_inversion import tiny_generator

WEIGHTINGS = [
    SpatialWeighting(),                                    # the paper's: tau 0.16, k 1, alpha 1, rgb_eps 1
    SpatialWeighting(xy_threshold=0.0),                    # eps = 1: w = 1 + k D_s
    SpatialWeighting(xy_threshold=0.3, k=2.0, alpha=0.7, rgb_eps=0.5),
    SpatialWeighting(xy_threshold=0.1, alpha=2.5, rgb_eps=2.0),
]


LIBRARY_PRUNE_MIN_REFERENCES = chamfer.PRUNE_MIN_REFERENCES


@pytest.fixture(autouse=True)
def prune_small_sets(monkeypatch):
    """The library prunes only sets of thousands of points (where it pays); these tests prune sets of
    a few hundred too, so that the pruned path runs, with many blocks, on every case."""
    monkeypatch.setattr(chamfer, "PRUNE_MIN_REFERENCES", 2 * chamfer._REFERENCE_BLOCK)


# -- a dense search over the same cost -------------------------------------------------------------

def dense_first_minimisers(query, reference, query_valid, reference_valid, query_pos, reference_pos, weighting,
                           both_directions):
    """The whole (B, P, Q) matrix of _pair_cost, then the first minimiser along each axis (0 where a
    point is padding or has no valid partner), as nearest_neighbours documents."""
    batch, num_query, channels = query.shape
    num_reference = reference.shape[1]
    rows = []
    for start in range(0, num_query, 128):  # a slab of rows at a time keeps the (., ., ., C) tensors small
        q = query[:, start:start + 128]
        shape = (batch, q.shape[1], num_reference)
        pair = lambda a, b, c: (a[:, :, None].expand(*shape, c).contiguous(),  # noqa: E731
                                b[:, None].expand(*shape, c).contiguous())
        values = pair(q, reference, channels)
        xy = pair(query_pos[:, start:start + 128], reference_pos, 2) if weighting is not None else (None, None)
        rows.append(_pair_cost(values[0], values[1], xy[0], xy[1], weighting))
    cost = torch.cat(rows, dim=1)
    cost = cost.masked_fill(~(query_valid[:, :, None] & reference_valid[:, None]), float("inf"))
    forward = torch.where(query_valid & reference_valid.any(1, keepdim=True), cost.argmin(2), 0)
    if not both_directions:
        return forward, None
    return forward, torch.where(reference_valid & query_valid.any(1, keepdim=True), cost.argmin(1), 0)


def search(query, reference, query_valid, reference_valid, query_pos, reference_pos, weighting, both_directions,
           **options):
    return nearest_neighbours(query, reference, query_valid=query_valid, reference_valid=reference_valid,
                              query_pos=query_pos, reference_pos=reference_pos, weighting=weighting,
                              both_directions=both_directions, **options)


def assert_searches_agree(inputs, weighting, both_directions, chunk_size=1 << 14):
    """exact search pruned == unpruned == dense, every index; returns (pruned pairs, unpruned pairs)
    per image."""
    dense = dense_first_minimisers(*inputs, weighting, both_directions)
    results = [search(*inputs, weighting, both_directions, pruning=pruning, exact=True, chunk_size=chunk_size)
               for pruning in (False, True)]
    for result in results:
        assert torch.equal(result.query_to_reference, dense[0])
        if both_directions:
            assert torch.equal(result.reference_to_query, dense[1])
    return results[1].pairs, results[0].pairs


# -- random point sets -----------------------------------------------------------------------------

def point_sets(kind: str, seed: int, counts_query, counts_reference, channels: int, dtype):
    """Padded (query, reference, valid masks, positions) with per-image counts.

    uniform     positions and values uniform in [-1, 1]: poor matches, little to prune
    smooth      uniform positions; values a smooth function of the position plus noise, so that most
                points have a close, similar partner: much to prune
    blobs       the same values on three Gaussian blobs per image (the same blobs for both sets)
    grid        pixel centres of a 40 x 40 image with values on 5 levels: many exactly equal costs
    duplicates  every reference point present 3 times (same position and value): exact ties
    """
    g = torch.Generator().manual_seed(seed)

    def one(n, image):
        if kind == "grid":
            cells = torch.randperm(1600, generator=g)[:n]
            xy = torch.stack([(2 * (cells % 40) + 1) / 40 - 1, 1 - (2 * (cells // 40) + 1) / 40], -1).to(dtype)
            values = torch.randint(0, 5, (n, channels), generator=g).to(dtype) / 2 - 1
            return xy, values
        if kind == "blobs":
            scene = torch.Generator().manual_seed(1000 * seed + image)
            centres = torch.rand(3, 2, generator=scene, dtype=dtype) * 1.2 - 0.6
            xy = (centres[torch.randint(0, 3, (n,), generator=g)]
                  + 0.15 * torch.randn(n, 2, generator=g, dtype=dtype)).clamp(-1, 1)
        else:
            xy = torch.rand(n, 2, generator=g, dtype=dtype) * 2 - 1
        if kind in ("blobs", "smooth"):
            basis = torch.linspace(1, 3, channels, dtype=dtype)
            values = torch.sin(basis * xy[:, :1] + xy[:, 1:] / basis) + 0.05 * torch.randn(n, channels, generator=g,
                                                                                            dtype=dtype)
            return xy, values
        return xy, torch.rand(n, channels, generator=g, dtype=dtype) * 2 - 1

    def padded(counts, duplicate=False):
        sets = []
        for image, n in enumerate(counts):
            xy, values = one(-(-n // 3) if duplicate else n, image)
            if duplicate:  # interleaved copies: tied partners far apart in reference order
                xy, values = xy.repeat(3, 1)[:n], values.repeat(3, 1)[:n]
            sets.append((xy, values))
        longest = max(counts)
        xy = torch.stack([F.pad(s[0], (0, 0, 0, longest - len(s[0]))) for s in sets])
        values = torch.stack([F.pad(s[1], (0, 0, 0, longest - len(s[1]))) for s in sets])
        valid = torch.arange(longest)[None] < torch.tensor(counts)[:, None]
        return xy, values, valid

    query_xy, query, query_valid = padded(counts_query)
    reference_xy, reference, reference_valid = padded(counts_reference, duplicate=kind == "duplicates")
    return query, reference, query_valid, reference_valid, query_xy, reference_xy


CASES = [  # kind, channels, dtype, query counts, reference counts (one entry per image)
    ("uniform", 3, torch.float64, [300], [450]),
    ("uniform", 3, torch.float32, [500, 120], [260, 700]),
    ("smooth", 3, torch.float32, [2000, 1200], [1800, 2500]),
    ("smooth", 3, torch.float64, [2000], [2000]),
    ("blobs", 3, torch.float32, [700, 400], [650, 900]),
    ("blobs", 16, torch.float32, [500, 500], [600, 300]),
    ("grid", 3, torch.float32, [600, 350], [700, 500]),
    ("grid", 3, torch.float64, [900], [900]),
    ("grid", 1, torch.float32, [400, 0], [500, 300]),   # the second image's prediction is empty
    ("duplicates", 3, torch.float32, [500], [600]),
    ("duplicates", 3, torch.float64, [300, 500], [400, 0]),  # the second image's target is empty
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_pruned_search_equals_unpruned_and_dense_on_random_sets(case):
    kind, channels, dtype, counts_query, counts_reference = CASES[case]
    inputs = point_sets(kind, case, counts_query, counts_reference, channels, dtype)
    for w, weighting in enumerate(WEIGHTINGS):
        both = (case + w) % 2 == 0
        pruned, unpruned = assert_searches_agree(inputs, weighting, both)
        assert torch.equal(unpruned, torch.tensor(counts_query) * torch.tensor(counts_reference))
        assert (pruned <= unpruned).all()
        if kind == "smooth" and weighting == WEIGHTINGS[0]:
            assert pruned.sum() < 0.7 * unpruned.sum()  # the bound does skip pairs


def test_search_results_do_not_depend_on_chunk_size_or_direction_flag():
    inputs = point_sets("grid", 1, [600, 333], [700, 250], 3, torch.float32)
    weighting = SpatialWeighting()
    reference = search(*inputs, weighting, True, pruning=False, exact=True, chunk_size=1)
    for chunk_size in (1000, 1 << 14, 1 << 20):
        for pruning in (False, True):
            for both in (False, True):
                result = search(*inputs, weighting, both, pruning=pruning, exact=True, chunk_size=chunk_size)
                assert torch.equal(result.query_to_reference, reference.query_to_reference)
                if both:
                    assert torch.equal(result.reference_to_query, reference.reference_to_query)


def test_plain_distance_search_equals_dense_with_ties():
    # The mask loss's cost (no weighting, never pruned): the exact search is the dense first minimiser.
    query, reference, query_valid, reference_valid, _, _ = point_sets("grid", 2, [300, 200], [500, 450], 2,
                                                                     torch.float32)
    for both in (False, True):
        dense = dense_first_minimisers(query, reference, query_valid, reference_valid, None, None, None, both)
        result = nearest_neighbours(query, reference, query_valid=query_valid, reference_valid=reference_valid,
                                    both_directions=both, chunk_size=5000, exact=True)
        assert torch.equal(result.query_to_reference, dense[0])
        if both:
            assert torch.equal(result.reference_to_query, dense[1])
    assert not can_prune(None, 10_000) and not can_prune(SpatialWeighting(rgb_eps=0.0), 10_000)
    assert can_prune(SpatialWeighting(), 10_000)


def test_points_without_a_partner_nominate_no_candidates(monkeypatch):
    # An image whose reference set is empty, beside one that is not: its queries would otherwise find
    # every padded reference equally far (all candidates, P x Q of them).
    nominated = []
    original = chamfer._RunningMinimum.nominate
    monkeypatch.setattr(chamfer._RunningMinimum, "nominate",
                        lambda self, ids, *rest: (nominated.append(ids.numel()), original(self, ids, *rest)))
    inputs = point_sets("smooth", 5, [1500, 1500], [1600, 0], 3, torch.float32)
    for pruning in (False, True):
        nominated.clear()
        result = search(*inputs, SpatialWeighting(), True, pruning=pruning, exact=True)
        assert (result.query_to_reference[1] == 0).all()
        assert sum(nominated) < 20 * 1500  # a few per point that has partners


def test_pruned_tiles_are_no_larger_than_one_visit(monkeypatch):
    # A GPU's chunk_size (2^27 pairs) must not give the pruned search two 512 MiB buffers when a
    # visit offers at most one block pair per block.
    buffers = []
    original = chamfer._tile_cost
    monkeypatch.setattr(chamfer, "_tile_cost", lambda *args: (buffers.append(args[-2].untyped_storage().nbytes()),
                                                              original(*args))[1])
    inputs = point_sets("smooth", 6, [1500], [1600], 3, torch.float32)
    search(*inputs, SpatialWeighting(), True, pruning=True, chunk_size=chamfer.CUDA_CHUNK_SIZE)
    blocks = -(-1500 // chamfer._QUERY_BLOCK) + -(-1600 // chamfer._REFERENCE_BLOCK)
    assert buffers and max(buffers) <= blocks * chamfer._QUERY_BLOCK * chamfer._REFERENCE_BLOCK * 4


def test_losses_and_gradients_are_bit_equal_with_and_without_pruning():
    for loss, channels in ((pixel_chamfer_texture_loss, 3), (feature_chamfer_texture_loss, 16)):
        query, reference, query_valid, reference_valid, query_xy, reference_xy = point_sets(
            "smooth", 3, [1500, 350], [1700, 500], channels, torch.float32)
        values = {}
        for pruning in (False, True):
            leaves = [query.clone().requires_grad_(True), reference.clone().requires_grad_(True)]
            value = loss(query_xy, leaves[0], reference_xy, leaves[1], pred_valid=query_valid,
                         target_valid=reference_valid, pruning=pruning, exact=True)
            value.sum().backward()
            values[pruning] = (value.detach(), leaves[0].grad, leaves[1].grad)
        for unpruned, pruned in zip(values[False], values[True]):
            assert torch.equal(unpruned, pruned)


# -- the search by tile cost, where nothing is pruned ----------------------------------------------

def one_tile_costs(query, reference, query_valid, reference_valid, query_pos, reference_pos, weighting,
                   both_directions):
    """The expanded-form cost of every pair from one matmul: what the search computes when one tile
    holds every pair (its factors are chamfer._tile_factors's, the weight is applied as the tiles do)."""
    rows, columns, xy_rows, xy_columns = chamfer._tile_factors(
        query, reference, query_pos, reference_pos, query_valid if both_directions else None, reference_valid,
        weighting)
    cost = torch.bmm(rows, columns)
    return cost if weighting is None else cost * weighting.weight_from_base_(torch.bmm(xy_rows, xy_columns))


def test_unpruned_search_takes_the_first_minimum_of_the_tile_cost(monkeypatch):
    # Below the library's threshold pruning=True changes nothing, and the search (one tile here)
    # returns the first minimiser of the expanded-form cost, not of the exact cost: on pixel-grid
    # points with colours on 5 levels, exact ties that the expanded form rounds apart go to the
    # partner its rounding favours (the data are checked to contain such points).
    monkeypatch.setattr(chamfer, "PRUNE_MIN_REFERENCES", LIBRARY_PRUNE_MIN_REFERENCES)
    inputs = point_sets("grid", 3, [600, 350], [700, 500], 3, torch.float32)
    query_valid, reference_valid = inputs[2], inputs[3]
    differs_from_exact = 0
    for weighting in WEIGHTINGS + [None]:
        for both in (False, True):
            xy = inputs[4:] if weighting is not None else (None, None)
            cost = one_tile_costs(*inputs[:4], *xy, weighting, both)
            results = [nearest_neighbours(*inputs[:2], query_valid=query_valid, reference_valid=reference_valid,
                                          query_pos=xy[0], reference_pos=xy[1], weighting=weighting,
                                          both_directions=both, chunk_size=1 << 30, pruning=pruning)
                       for pruning in (True, False)]
            for result in results:
                assert torch.equal(result.query_to_reference[query_valid], cost.argmin(2)[query_valid])
                if both:
                    assert torch.equal(result.reference_to_query[reference_valid],
                                       cost.argmin(1)[reference_valid])
            exact = nearest_neighbours(*inputs[:2], query_valid=query_valid, reference_valid=reference_valid,
                                       query_pos=xy[0], reference_pos=xy[1], weighting=weighting,
                                       both_directions=both, exact=True)
            differs_from_exact += int((exact.query_to_reference != results[0].query_to_reference)[query_valid].sum())
    assert differs_from_exact > 0


def dyadic_point_sets(seed, counts_query, counts_reference, channels):
    """Positions on multiples of 1/16 and values on multiples of 1/8 in [-1, 1]: every product and sum
    of the expanded form (and of the weighting below) is exact in float32, so tile costs equal exact
    costs whatever the tile, and the many exact ties fall in different tiles."""
    g = torch.Generator().manual_seed(seed)

    def padded(counts):
        longest = max(counts)
        xy = torch.randint(-16, 17, (len(counts), longest, 2), generator=g).float() / 16
        values = torch.randint(-8, 9, (len(counts), longest, channels), generator=g).float() / 8
        valid = torch.arange(longest)[None] < torch.tensor(counts)[:, None]
        return xy * valid[..., None], values * valid[..., None], valid

    query_xy, query, query_valid = padded(counts_query)
    reference_xy, reference, reference_valid = padded(counts_reference)
    return query, reference, query_valid, reference_valid, query_xy, reference_xy


def test_unpruned_search_is_the_dense_first_minimiser_for_any_tiling_where_tile_costs_are_exact(monkeypatch):
    # The tie rule across tiles: the first minimiser within a tile, the earlier tile's on equal
    # minima, so that the choice equals one tile's (and here, with exact tile costs, the dense
    # search's) for every chunk_size, in both directions.
    monkeypatch.setattr(chamfer, "PRUNE_MIN_REFERENCES", LIBRARY_PRUNE_MIN_REFERENCES)
    inputs = dyadic_point_sets(8, [700, 333], [900, 450], 3)
    for weighting in (SpatialWeighting(xy_threshold=0.25), SpatialWeighting(xy_threshold=0.0, rgb_eps=0.5), None):
        xy = inputs[4:] if weighting is not None else (None, None)
        dense = dense_first_minimisers(*inputs[:4], *xy, weighting, True)
        for chunk_size in (1, 1000, 1 << 14, 1 << 18):
            result = nearest_neighbours(*inputs[:2], query_valid=inputs[2], reference_valid=inputs[3],
                                        query_pos=xy[0], reference_pos=xy[1], weighting=weighting,
                                        both_directions=True, chunk_size=chunk_size)
            valid = inputs[2], inputs[3]  # (a padded query's index is meaningless here)
            assert torch.equal(result.query_to_reference[valid[0]], dense[0][valid[0]]), (weighting, chunk_size)
            assert torch.equal(result.reference_to_query[valid[1]], dense[1][valid[1]]), (weighting, chunk_size)


def test_unpruned_losses_report_the_tile_choices_bit_for_bit(monkeypatch):
    # The losses' values and gradients where nothing is pruned: _pair_cost (vectorised pow, values
    # as given) at the tile cost's first minimisers, mean over the valid points.
    monkeypatch.setattr(chamfer, "PRUNE_MIN_REFERENCES", LIBRARY_PRUNE_MIN_REFERENCES)
    for loss, both, channels in ((pixel_chamfer_texture_loss, False, 3), (feature_chamfer_texture_loss, True, 4)):
        query, reference, query_valid, reference_valid, query_xy, reference_xy = point_sets(
            "grid", 4, [600, 350], [700, 500], channels, torch.float32)
        # a strided channel axis, as point_set_from_mask gives
        query = query.transpose(1, 2).contiguous().transpose(1, 2)
        for weighting in WEIGHTINGS:
            options = dict(xy_threshold=weighting.xy_threshold, k=weighting.k, alpha=weighting.alpha,
                           rgb_eps=weighting.rgb_eps, pred_valid=query_valid, target_valid=reference_valid)
            cost = one_tile_costs(query, reference, query_valid, reference_valid, query_xy, reference_xy, weighting,
                                  both)
            leaves = [query.clone().requires_grad_(True), reference.clone().requires_grad_(True)]
            value = loss(query_xy, leaves[0], reference_xy, leaves[1], chunk_size=1 << 30, **options)
            value.sum().backward()
            expected_leaves = [query.clone().requires_grad_(True), reference.clone().requires_grad_(True)]
            gather = lambda points, index: points.gather(  # noqa: E731
                1, index[..., None].expand(-1, -1, points.shape[-1]))
            index = cost.argmin(2)
            expected = _masked_mean(_pair_cost(expected_leaves[0], gather(expected_leaves[1], index), query_xy,
                                               gather(reference_xy, index), weighting), query_valid, reference_valid)
            if both:
                index = cost.argmin(1)
                expected = (expected + _masked_mean(
                    _pair_cost(expected_leaves[1], gather(expected_leaves[0], index), reference_xy,
                               gather(query_xy, index), weighting), reference_valid, query_valid)) / 2
            expected.sum().backward()
            assert torch.equal(value, expected), (loss.__name__, weighting)
            for leaf, expected_leaf in zip(leaves, expected_leaves):
                assert torch.equal(leaf.grad, expected_leaf.grad), (loss.__name__, weighting)


# -- real renders and targets ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_pairs(tmp_path_factory):
    """(prediction, target) image and mask pairs at 96 px: synthetic targets against the tiny
    generator's renderings at a perturbed camera, and against the target itself shifted by 3 pixels
    (a prediction close to convergence, where the bound prunes most)."""
    size = 96
    root = tmp_path_factory.mktemp("pruning_data")
    split = write_split(SyntheticConfig(image_size=size, texture_size=64, out_dir=str(root), occluder_fraction=0.0),
                        "test", 2)
    samples = [SyntheticDataset(split, CropConfig(img_size=size, mask_threshold=0.95))[i] for i in range(2)]
    target_images = torch.stack([s.image for s in samples])
    target_masks = torch.stack([s.mask for s in samples])
    generator, template = tiny_generator(), MeshTemplate.uv_sphere()
    cameras = torch.stack([s.camera for s in samples])
    cameras = cameras + torch.tensor([0.05, 0.03, -0.02, 0.0, 0.05, 0.0, 0.0])  # scale, shift and a small turn
    cameras[:, 3:] = F.normalize(cameras[:, 3:], dim=1)
    with torch.no_grad():
        z = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
        texture, mesh_map = generator(z, torch.tensor([s.class_id for s in samples]))
        ndc = WeakPerspectiveCamera.from_tensor(cameras).transform(template.vertex_positions(mesh_map))
        render = template.render(make_renderer(size), ndc, texture, background=0.0)
    shifted = (target_images.roll(3, dims=-1), target_masks.roll(3, dims=-1))
    return [((render.image, render.mask), (target_images, target_masks)), (shifted, (target_images, target_masks))]


def test_pruned_search_is_exact_on_real_renders_and_targets(real_pairs):
    vgg = VGGFeatures(allow_random_weights=True)
    for case, ((image, mask), (target_image, target_mask)) in enumerate(real_pairs):
        pred, target = image_point_set(image, mask), image_point_set(target_image, target_mask)
        pred_features, target_features = vgg.point_set(image, mask), vgg.point_set(target_image, target_mask)
        weighting = WEIGHTINGS[case]  # the paper's, then xy_threshold = 0
        pruned, unpruned = assert_searches_agree(
            (pred.values, target.values, pred.valid, target.valid, pred.positions, target.positions),
            weighting, False, chunk_size=1 << 16)
        if case == 1:  # close to convergence; at 96 px a block is a large part of the bound's reach
            assert pruned.sum() < 0.8 * unpruned.sum()
        assert_searches_agree((pred_features.values, target_features.values, pred_features.valid,
                               target_features.valid, pred_features.positions, target_features.positions),
                              weighting, True)

        # The losses, values and gradients, through the image: bit for bit.
        for name in ("pixel", "feature"):
            results = []
            for pruning in (False, True):
                leaf = image.clone().requires_grad_(True)
                if name == "pixel":
                    points = image_point_set(leaf, mask)
                    value = pixel_chamfer_texture_loss(points.positions, points.values, target.positions,
                                                       target.values, pred_valid=points.valid,
                                                       target_valid=target.valid, pruning=pruning, exact=True)
                else:
                    points = vgg.point_set(leaf, mask)
                    value = feature_chamfer_texture_loss(points.positions, points.values, target_features.positions,
                                                         target_features.values, pred_valid=points.valid,
                                                         target_valid=target_features.valid, pruning=pruning,
                                                         exact=True)
                value.sum().backward()
                results.append((value.detach(), leaf.grad))
            assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1]), name


def test_loss_value_is_the_dense_minimum_bit_for_bit(real_pairs):
    (image, mask), (target_image, target_mask) = real_pairs[1]
    pred, target = image_point_set(image, mask), image_point_set(target_image, target_mask)
    weighting = SpatialWeighting()
    inputs = (pred.values, target.values, pred.valid, target.valid, pred.positions, target.positions)
    index, _ = dense_first_minimisers(*inputs, weighting, False)
    gather = lambda points: points.gather(1, index[..., None].expand(-1, -1, points.shape[-1]))  # noqa: E731
    minimum = _pair_cost(pred.values.contiguous(), gather(target.values.contiguous()), pred.positions,
                         gather(target.positions), weighting)
    expected = _masked_mean(minimum, pred.valid, target.valid)
    value = pixel_chamfer_texture_loss(pred.positions, pred.values, target.positions, target.values,
                                       pred_valid=pred.valid, target_valid=target.valid)
    assert torch.equal(value, expected)


# -- the pieces the exactness rests on ---------------------------------------------------------------

def test_grouped_row_minima_match_torch_on_plain_and_transposed_tiles():
    # The exact search's tile minima; which partner wins a tie is decided by exact costs afterwards.
    g = torch.Generator().manual_seed(7)
    cost = torch.randint(0, 20, (2, 128, 256), generator=g).float()  # many ties
    for tile in (cost, cost.transpose(1, 2)):
        row_min, group_min = _row_minima(tile)
        assert torch.equal(row_min, tile.amin(dim=2))
        assert torch.equal(group_min, tile.reshape(2, tile.shape[1], -1, _MINIMA_GROUP).amin(dim=3))


def test_pointwise_pow_gives_every_element_the_same_routine():
    # Contiguous pow on the CPU mixes a vectorised routine and libm's pow; a pair's weight must not
    # depend on where the pair sits, so the weight goes through one routine for every element.
    base = torch.rand(4099, dtype=torch.float64) * 8 + 1
    for alpha in (0.7, 1.3, 2.5):
        expected = torch.tensor([math.pow(x, alpha) for x in base.tolist()], dtype=torch.float64)
        assert torch.equal(_pointwise_pow(base, alpha), expected)
        assert torch.equal(_pointwise_pow(base[1:], alpha), expected[1:])


@pytest.mark.parametrize("name, value", [("k", -1.0), ("alpha", -0.5), ("rgb_eps", float("nan"))])
def test_spatial_weighting_refuses_a_decreasing_weight(name, value):
    with pytest.raises(ValueError, match=name):
        SpatialWeighting(**{name: value})


@requires_cuda
def test_pruned_search_is_exact_on_cuda():
    inputs = [t.to(CUDA_DEVICE) for t in point_sets("smooth", 4, [1900, 500], [1800, 700], 3, torch.float32)]
    for weighting in WEIGHTINGS:
        pruned, unpruned = assert_searches_agree(inputs, weighting, True)
        assert pruned.device.type == torch.device(CUDA_DEVICE).type and pruned.sum() <= unpruned.sum()
