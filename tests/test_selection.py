"""The z-candidate selection: the shortlist (a cheap pass over every candidate, the full loss over each
image's best K) and the generated candidates kept across batches."""

from __future__ import annotations

import pytest
import torch

from meshinv.geometry.template import MeshTemplate
from meshinv.inversion import Inverter, InversionLossConfig
from meshinv.utils.config import SettingError
from test_inversion import SIZE, samples, split, stack, tiny_config, tiny_generator  # noqa: F401 (fixtures)

LOSS = InversionLossConfig(feature_weight=0.0)  # the cheap pass never has the VGG term


def inverter_for(**overrides) -> Inverter:
    return Inverter(tiny_generator(), MeshTemplate.uv_sphere(), tiny_config(select_num=24, loss=LOSS, **overrides))


def selection_inputs(inverter: Inverter, samples, classes=None):
    images, masks, cameras, known, ids = stack(samples)
    classes = known if classes is None else classes
    return inverter.objective.prepare(images, masks), cameras, inverter._class_ids(classes, ids)


@pytest.mark.parametrize("classes", [None, torch.tensor([-1, 3, -1])])
def test_shortlist_takes_the_full_losss_best_of_the_cheap_passs_best_k(samples, classes):
    inverter = inverter_for(select_shortlist=5, select_prescore_size=16)
    targets, cameras, class_ids = selection_inputs(inverter, samples, classes)
    z, loss, chosen = inverter.select_initial_z(targets, cameras, class_ids)

    candidates, candidate_classes = inverter._candidates(None)
    with torch.no_grad():
        cheap = inverter._score_all(inverter.prescore_objective, inverter._prescore_targets(targets), cameras,
                                    class_ids, candidates, candidate_classes)
        full = inverter._score_all(inverter.objective, targets, cameras, class_ids, candidates, candidate_classes)
    assert inverter.prescore_objective.renderer.image_size == (16, 16)
    for i in range(3):
        shortlist = cheap[i].argsort()[:5]
        best = int(shortlist[full[i, shortlist].argmin()])
        assert torch.equal(z[i], candidates[best])
        assert float(loss[i]) == pytest.approx(float(full[i, best]), rel=1e-5)
        expected_class = int(class_ids[i]) if class_ids[i] >= 0 else best % 8
        assert int(chosen[i]) == expected_class


def test_a_shortlist_under_the_full_loss_itself_changes_nothing(samples):
    """With the cheap pass at the working resolution and no VGG term, the cheap loss is the full loss:
    any shortlist keeps the exhaustive choice."""
    exhaustive = inverter_for()
    shortlisted = inverter_for(select_shortlist=1, select_prescore_size=SIZE)
    targets, cameras, class_ids = selection_inputs(exhaustive, samples)
    z, loss, _ = exhaustive.select_initial_z(targets, cameras, class_ids)
    z_short, loss_short, _ = shortlisted.select_initial_z(targets, cameras, class_ids)
    assert torch.equal(z, z_short)
    torch.testing.assert_close(loss, loss_short, rtol=1e-5, atol=0)


def test_the_cheap_targets_are_the_inputs_averaged_down(samples):
    inverter = inverter_for(select_shortlist=2, select_prescore_size=8)
    targets, _, _ = selection_inputs(inverter, samples)
    cheap = inverter._prescore_targets(targets)
    assert cheap.images.shape == (3, 3, 8, 8) and cheap.masks.shape == (3, 1, 8, 8)
    # each low-resolution pixel is the mean of its 4 x 4 block
    torch.testing.assert_close(cheap.images[0, :, 1, 2], targets.images[0, :, 4:8, 8:12].mean(dim=(1, 2)))
    coverage = targets.masks[:, 0].reshape(3, 8, 4, 8, 4).mean(dim=(2, 4))
    assert torch.equal(cheap.masks[:, 0] > 0.5, coverage >= 0.5)
    # a mask too thin for any half-covered block keeps its most covered block
    thin = targets.masks.clone().zero_()
    thin[:, :, 5, 9] = 1
    tiny = inverter._prescore_targets(type(targets)(targets.images, thin, targets.pixels, None))
    assert (tiny.masks.flatten(1).sum(1) == 1).all() and (tiny.masks[:, 0, 1, 2] == 1).all()


def test_generated_candidates_are_kept_across_batches_within_the_budget(samples, monkeypatch):
    inverter = inverter_for()
    calls = []
    generate = inverter.generator.forward

    def counting(z, classes=None):
        calls.append(len(z))
        return generate(z, classes)

    monkeypatch.setattr(inverter.generator, "forward", counting)
    targets, cameras, class_ids = selection_inputs(inverter, samples)
    first = inverter.select_initial_z(targets, cameras, class_ids)
    generated = sum(calls)
    assert generated == 24 * len(class_ids.unique())  # every candidate once per class of the batch
    again = inverter.select_initial_z(targets, cameras, class_ids)
    assert sum(calls) == generated  # nothing generated a second time
    for a, b in zip(first, again):
        assert torch.equal(a, b)

    # No cache: the candidates are generated again, and the choice is the same.
    uncached = inverter_for(select_cache_mb=0)
    z, loss, _ = uncached.select_initial_z(targets, cameras, class_ids)
    assert torch.equal(z, first[0]) and not uncached._generated_cache
    torch.testing.assert_close(loss, first[1], rtol=1e-5, atol=0)

    # A budget smaller than all classes keeps the most recently used ones, under the budget.
    one_class = sum(t.numel() * t.element_size() for t in inverter._generated_cache[int(class_ids[0])])
    small = inverter_for(select_cache_mb=8)
    assert one_class <= 8 * 2 ** 20 < 3 * one_class  # the test's premise: one class fits, three do not
    small.select_initial_z(targets, cameras, class_ids)
    kept = sum(t.numel() * t.element_size() for v in small._generated_cache.values() for t in v)
    assert 0 < kept <= 8 * 2 ** 20
    assert list(small._generated_cache)[-1] == int(class_ids.unique()[-1])


@pytest.mark.parametrize("key, value, message", [
    ("select_shortlist", -1, "select_shortlist must be >= 0"),
    ("select_prescore_size", 18, "select_prescore_size must be a multiple of 4"),
    ("select_prescore_size", 64, "select_prescore_size must be a multiple of 4 between 4 and crop.img_size"),
    ("select_cache_mb", -1, "select_cache_mb must be >= 0"),
])
def test_bad_selection_settings_are_named(key, value, message):
    with pytest.raises(SettingError, match=message):
        inverter_for(**{key: value})
