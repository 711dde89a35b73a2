"""Weight files (meshinv/utils/weights.py): local folders first, then a download into the torch hub
cache from the publishing library's URL with its hash check, and an error that names the file, the
URL and the folders when neither works. The server is faked (torch.hub's urlopen): no test touches
the network, and the suite runs with downloads off (tests/conftest.py)."""

from __future__ import annotations

import hashlib
import io
import os

import pytest
import torch

from conftest import register_weights as register
from meshinv.utils.weights import (
    OFFLINE_ENV, MissingWeightsError, WeightSource, downloads_enabled, find_weights, known_weights,
    weight_search_dirs,
)

CONTENT = b"tiny weight file"
SHA = hashlib.sha256(CONTENT).hexdigest()
URL = "https://example.invalid/models/"


def test_the_test_suite_runs_with_downloads_off():
    assert os.environ[OFFLINE_ENV] == "1" and not downloads_enabled()


def test_every_loader_file_is_fetchable_from_its_publisher():
    from torchvision import models

    from meshinv.data.segment import MASKRCNN_WEIGHTS
    from meshinv.evaluation.fid.inception import FID_INCEPTION_FILE, TORCHVISION_INCEPTION_FILES
    from meshinv.losses.vgg import VGG19_WEIGHTS_FILE
    from meshinv.models.camera import RESNET18_WEIGHTS

    known = known_weights()
    assert known[VGG19_WEIGHTS_FILE].url == models.VGG19_Weights.IMAGENET1K_V1.url
    assert known[RESNET18_WEIGHTS].url == models.ResNet18_Weights.IMAGENET1K_V1.url
    assert known[MASKRCNN_WEIGHTS].url == models.detection.MaskRCNN_ResNet50_FPN_Weights.COCO_V1.url
    assert known[TORCHVISION_INCEPTION_FILES[0]].url == models.Inception_V3_Weights.IMAGENET1K_V1.url
    for name in (VGG19_WEIGHTS_FILE, RESNET18_WEIGHTS, MASKRCNN_WEIGHTS, TORCHVISION_INCEPTION_FILES[0]):
        assert known[name].check_hash, name   # torchvision loads its files with check_hash=True
    pytorch_fid = pytest.importorskip("pytorch_fid.inception")
    assert known[FID_INCEPTION_FILE] == WeightSource(pytorch_fid.FID_WEIGHTS_URL, False, "pytorch-fid")


def test_offline_the_error_names_file_url_and_folders(weight_folders):
    with pytest.raises(MissingWeightsError) as info:
        find_weights("vgg19-dcbb9e9d.pth", what="test network")
    message = str(info.value)
    assert "'vgg19-dcbb9e9d.pth' not found" in message and "test network" in message
    assert "downloads are off (MESHINV_OFFLINE=1)" in message
    assert "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in message
    for folder in weight_search_dirs():
        assert str(folder) in message
    assert not weight_folders.exists()   # nothing was attempted


def test_a_known_file_is_downloaded_into_the_hub_cache_once(weight_folders, fake_weight_server, monkeypatch):
    name = f"tiny-{SHA[:8]}.pth"
    register(monkeypatch, name, WeightSource(URL + name, True, "test"))
    fake_weight_server.files[URL + name] = CONTENT
    path = find_weights(name)
    assert path == weight_folders / name and path.read_bytes() == CONTENT
    assert fake_weight_server.requests == [URL + name]
    assert find_weights(name) == path and len(fake_weight_server.requests) == 1   # the cache is a search folder


def test_a_hash_mismatch_leaves_nothing_and_says_so(weight_folders, fake_weight_server, monkeypatch):
    name = "tiny-00000000.pth"
    register(monkeypatch, name, WeightSource(URL + name, True, "test"))
    fake_weight_server.files[URL + name] = CONTENT
    with pytest.raises(MissingWeightsError) as info:
        find_weights(name)
    message = str(info.value)
    assert name in message and URL + name in message and "invalid hash value" in message
    assert SHA in message and "failed" in message
    for folder in weight_search_dirs():
        assert str(folder) in message
    assert list(weight_folders.iterdir()) == []   # no file, no partial download
    # Without a hash check (pytorch-fid's way) the same bytes are accepted.
    register(monkeypatch, name, WeightSource(URL + name, False, "test"))
    assert find_weights(name).read_bytes() == CONTENT


def test_a_failed_download_names_file_url_folders_and_why(weight_folders, fake_weight_server, monkeypatch):
    name = "gone-12345678.pth"
    register(monkeypatch, name, WeightSource(URL + name, True, "test"))
    with pytest.raises(MissingWeightsError) as info:
        find_weights(name, what="test network")
    message = str(info.value)
    assert name in message and URL + name in message and "name or service not known" in message
    assert "test network" in message and str(weight_folders) in message
    assert fake_weight_server.requests == [URL + name]


def test_local_files_come_first_and_unknown_files_are_never_fetched(weight_folders, fake_weight_server, monkeypatch,
                                                                   tmp_path):
    name = f"tiny-{SHA[:8]}.pth"
    register(monkeypatch, name, WeightSource(URL + name, True, "test"))
    (tmp_path / "repo" / "pretrained").mkdir(parents=True)
    (tmp_path / "repo" / "pretrained" / name).write_bytes(b"local")
    assert find_weights(name) == tmp_path / "repo" / "pretrained" / name
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / name).write_bytes(b"env")
    assert find_weights(name) == tmp_path / "env" / name
    with pytest.raises(MissingWeightsError, match=r"'meshinversion_cub.pth' not found(.|\n)*not fetched automatically"):
        find_weights("meshinversion_cub.pth")
    assert fake_weight_server.requests == []


def test_the_vgg_loader_fetches_its_file(weight_folders, fake_weight_server, monkeypatch):
    from meshinv.losses.vgg import VGG19_WEIGHTS_FILE, VGGFeatures, vgg19_relu3_1

    trunk = vgg19_relu3_1()
    buffer = io.BytesIO()
    torch.save({f"features.{k}": v for k, v in trunk.state_dict().items()}, buffer)
    url = known_weights()[VGG19_WEIGHTS_FILE].url
    # Our file is not torchvision's, so its name's sha256 prefix is not checked here.
    register(monkeypatch, VGG19_WEIGHTS_FILE, WeightSource(url, False, "torchvision"))
    fake_weight_server.files[url] = buffer.getvalue()
    vgg = VGGFeatures()
    assert vgg.pretrained and (weight_folders / VGG19_WEIGHTS_FILE).is_file() and fake_weight_server.requests == [url]
    torch.testing.assert_close(vgg.trunk[10].weight, trunk[10].weight)
