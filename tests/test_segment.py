"""Automatic masks: largest confident instance, "nothing found", the PNG cache, weight lookup and the
backend dispatch. No weight file is needed: a fake detector stands in, or random weights by opt-in."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image

import meshinv.data.segment as segment
from meshinv.data.segment import (
    MASKRCNN_WEIGHTS, Detections, SegmentConfig, Segmenter, cached_mask, select_instance,
)
from meshinv.utils.io import save_image
from meshinv.utils.weights import MissingWeightsError

H, W = 24, 32


def box_mask(y0, y1, x0, x1, value=0.9) -> torch.Tensor:
    mask = torch.zeros(H, W)
    mask[y0:y1, x0:x1] = value
    return mask


class FakeDetector(torch.nn.Module):
    """Returns fixed detections in torchvision's output format and counts its calls."""

    def __init__(self, labels, scores, masks):
        super().__init__()
        self.output = {"labels": torch.tensor(labels), "scores": torch.tensor(scores),
                       "masks": torch.stack(masks)[:, None] if masks else torch.zeros(0, 1, H, W)}
        self.calls = 0

    def forward(self, images):
        assert len(images) == 1 and images[0].shape == (3, H, W) and 0 <= float(images[0].min())
        self.calls += 1
        return [self.output]


@pytest.fixture
def fake_segmenter(monkeypatch):
    def make(labels, scores, masks, **cfg):
        detector = FakeDetector(labels, scores, masks)
        monkeypatch.setattr(segment, "_build_maskrcnn", lambda _cfg: detector)
        return Segmenter(SegmentConfig(**cfg)), detector
    return make


def test_largest_confident_instance_of_the_category_wins():
    small_bird, big_bird = box_mask(0, 4, 0, 4), box_mask(0, 10, 0, 10)
    huge_car, huge_unsure_bird = box_mask(0, 20, 0, 30), box_mask(0, 20, 0, 30)
    detections = Detections(torch.tensor([16, 16, 3, 16]), torch.tensor([0.9, 0.8, 0.99, 0.5]),
                            torch.stack([small_bird, big_bird, huge_car, huge_unsure_bird]))
    mask = select_instance(detections, label=16, score_threshold=0.7)
    assert mask.dtype == bool and mask.shape == (H, W) and mask.sum() == 100
    assert select_instance(detections, label=3, score_threshold=0.7).sum() == 600
    # Nothing found: no instance of the category, all below the threshold, or only empty masks.
    assert select_instance(detections, label=1, score_threshold=0.7) is None
    assert select_instance(detections, label=16, score_threshold=0.95) is None
    faint = Detections(torch.tensor([16]), torch.tensor([0.9]), box_mask(0, 5, 0, 5, value=0.3)[None])
    assert select_instance(faint, label=16, score_threshold=0.7) is None


def test_segmenter_keeps_the_configured_category(fake_segmenter):
    bird, car = box_mask(0, 6, 0, 6), box_mask(5, 20, 5, 25)
    image = np.random.default_rng(0).random((H, W, 3)).astype(np.float32)
    segmenter, _ = fake_segmenter([16, 3], [0.9, 0.9], [bird, car], category="car")
    assert segmenter.label == 3 and segmenter.segment(image).sum() == 15 * 20
    segmenter, _ = fake_segmenter([16, 3], [0.9, 0.9], [bird, car], category="bird")
    assert segmenter.segment(image).sum() == 36
    segmenter, _ = fake_segmenter([], [], [], category="bird")
    assert segmenter.segment(image) is None
    with pytest.raises(ValueError, match="expects an \\(H, W, 3\\) image"):
        segmenter.segment(image[..., 0])


def test_cached_mask_segments_each_image_once(fake_segmenter, tmp_path):
    image = np.random.default_rng(1).random((H, W, 3))
    save_image(tmp_path / "images" / "bird_a.png", image)
    save_image(tmp_path / "images" / "empty_b.png", image)
    cache = tmp_path / "masks"

    segmenter, detector = fake_segmenter([16], [0.9], [box_mask(2, 12, 3, 13)])
    first = cached_mask(segmenter, tmp_path / "images" / "bird_a.png", cache)
    again = cached_mask(segmenter, tmp_path / "images" / "bird_a.png", cache)
    assert detector.calls == 1 and first.sum() == 100 and np.array_equal(first, again)
    png = np.asarray(Image.open(cache / "bird_a.png"))
    assert png.shape == (H, W) and set(np.unique(png)) == {0, 255}  # the folder format's mask file

    segmenter, detector = fake_segmenter([3], [0.9], [box_mask(2, 12, 3, 13)])  # a car, not a bird
    assert cached_mask(segmenter, tmp_path / "images" / "empty_b.png", cache) is None
    assert cached_mask(segmenter, tmp_path / "images" / "empty_b.png", cache) is None
    assert detector.calls == 1 and (cache / "empty_b.none").is_file() and not (cache / "empty_b.png").exists()
    assert not list(cache.glob(".*.tmp"))  # atomic writes leave no temporaries


@pytest.fixture
def no_weight_files(tmp_path, monkeypatch):
    """Pretrained-file search in one empty folder only (whatever this machine has elsewhere)."""
    monkeypatch.setattr("meshinv.utils.weights.weight_search_dirs", lambda: [tmp_path])


def test_missing_weights_are_a_clear_error(no_weight_files):
    with pytest.raises(MissingWeightsError, match=MASKRCNN_WEIGHTS):
        Segmenter(SegmentConfig())


def test_random_weights_opt_in_runs_the_real_detector(no_weight_files, caplog):
    torch.manual_seed(0)
    segmenter = Segmenter(SegmentConfig(allow_random_weights=True, min_size=64, max_size=64, score_threshold=0.0))
    assert "RANDOM" in caplog.text
    image = np.random.default_rng(2).random((48, 64, 3)).astype(np.float32)
    detections = segmenter.detect(image)
    n = detections.labels.shape[0]
    assert detections.scores.shape == (n,) and detections.masks.shape == (n, 48, 64)
    mask = segmenter.segment(image)
    assert mask is None or (mask.shape == (48, 64) and mask.dtype == bool)


def test_backend_dispatch_errors(no_weight_files):
    with pytest.raises(ValueError, match="segment.category 'cat'"):
        Segmenter(SegmentConfig(category="cat", allow_random_weights=True))
    with pytest.raises(ValueError, match="segment.backend 'sam'"):
        Segmenter(SegmentConfig(backend="sam"))
    if importlib.util.find_spec("detectron2") is None:
        with pytest.raises(ImportError, match="detectron2"):
            Segmenter(SegmentConfig(backend="pointrend"))
    else:
        with pytest.raises(ValueError, match="pointrend_config"):
            Segmenter(SegmentConfig(backend="pointrend"))
