"""Bad input data (issue 13, section 2, the data side): every image, mask and annotation problem is a
DataError that names the file and the image, raised when that image is read, so that a batch job
records it and goes on. One image reader (meshinv.utils.images) decides what is read and what is refused."""

from __future__ import annotations

from dataclasses import replace

import json
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO_ROOT
from meshinv.data.datasets import open_dataset
from meshinv.data.folder import FolderDataset, read_image, read_mask
from meshinv.data.preprocess import CropConfig
from meshinv.data.sample import DataError, Sample

SIZE = 32
CAMERA = {"scale": 10.0, "translation": [16.0, 16.0], "quaternion": [1.0, 0.0, 0.0, 0.0]}


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes = b"") -> bytes:
    """A PNG file built by hand: any header (e.g. a huge size) with the given pixel rows (or none)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def write_photo(folder: Path, name: str, mask: bool = True, height: int = SIZE, width: int = SIZE) -> None:
    """A photo (noise) with a square object and, optionally, its mask in folder/masks."""
    rng = np.random.default_rng(len(name))
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    fmt = "PNG" if name.endswith(".png") else "JPEG"  # Pillow finds no suffix in "..png"
    Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8)).save(folder / name, format=fmt)
    if mask:
        object_mask = np.zeros((height, width), np.uint8)
        object_mask[8:24, 6:26] = 255
        Image.fromarray(object_mask).save(folder / "masks" / f"{Path(name).stem}.png", format="PNG")


# -- the image reader ----------------------------------------------------------------------------------

def test_16_bit_grey_png_is_scaled_by_its_maximum_not_clipped_to_white(tmp_path):
    values = np.array([[0, 1000, 16384, 32768], [40000, 50000, 60000, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I;16")  # what Pillow makes of it
    image = read_image(tmp_path / "deep.png")
    assert image.shape == (2, 4, 3) and image.dtype == np.float32
    np.testing.assert_allclose(image[..., 0], values / 65535.0, atol=1e-6)
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 0] == image[..., 2]).all()
    # A 16-bit mask: the object is above half of 65535 (20000 would have been 255 = object when clipped).
    mask_values = np.array([[0, 20000, 40000, 65535]], np.uint16)
    Image.fromarray(mask_values).save(tmp_path / "mask16.png")
    assert read_mask(tmp_path / "mask16.png").tolist() == [[0.0, 0.0, 1.0, 1.0]]


def test_16_bit_colour_png_reads_within_one_8_bit_step(tmp_path):
    pixels = [(65535, 32768, 256), (0, 1000, 50000)]
    rows = b"".join(b"\x00" + struct.pack(">HHH", *pixels[r]) * 3 for r in range(2))
    (tmp_path / "rgb16.png").write_bytes(png_bytes(3, 2, 16, 2, rows))
    image = read_image(tmp_path / "rgb16.png")
    np.testing.assert_allclose(image[:, 0], np.array(pixels) / 65535.0, atol=1 / 255)


def test_every_colour_mode_becomes_rgb_and_transparency_white(tmp_path):
    grey = np.array([[0, 100], [200, 255]], np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(grey).convert("P").save(tmp_path / "palette.png")
    rgba = np.array([[[10, 20, 30, 255], [10, 20, 30, 0]], [[200, 100, 0, 128], [0, 0, 0, 0]]], np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.new("CMYK", (4, 4), (0, 255, 0, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    for name in ("grey.png", "palette.png"):
        image = read_image(tmp_path / name)
        np.testing.assert_allclose(image, np.repeat(grey[..., None] / 255.0, 3, axis=2), atol=1e-6, err_msg=name)
    image = read_image(tmp_path / "rgba.png")
    alpha = rgba[..., 3:] / 255.0
    np.testing.assert_allclose(image, rgba[..., :3] / 255.0 * alpha + (1 - alpha), atol=1e-6)
    assert (image[0, 1] == 1).all() and (image[1, 1] == 1).all()  # fully transparent: white
    np.testing.assert_allclose(read_image(tmp_path / "cmyk.jpg"), np.broadcast_to([1.0, 0.0, 1.0], (4, 4, 3)),
                               atol=3 / 255)


def test_float_and_32_bit_images_outside_their_range_are_refused(tmp_path):
    Image.fromarray(np.full((3, 3), 0.25, np.float32)).save(tmp_path / "ok.tiff")
    np.testing.assert_allclose(read_image(tmp_path / "ok.tiff"), 0.25)
    Image.fromarray(np.full((3, 3), 7.5, np.float32)).save(tmp_path / "bright.tiff")
    with pytest.raises(DataError, match=r"bright\.tiff: image is a float image with values outside \[0, 1\]"):
        read_image(tmp_path / "bright.tiff")
    Image.fromarray(np.full((3, 3), 70000, np.int32)).save(tmp_path / "wide.tiff")
    with pytest.raises(DataError, match=r"wide\.tiff: mask is a 32-bit integer image"):
        read_mask(tmp_path / "wide.tiff")


def test_damaged_files_are_refused_naming_the_file(tmp_path):
    image = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "whole.png")
    Image.fromarray(image).save(tmp_path / "whole.jpg")
    for name in ("whole.png", "whole.jpg"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / f"cut_{name}").write_bytes(data[:len(data) // 2])
        with pytest.raises(DataError, match=rf"cut_{re.escape(name)}: cannot read image: damaged or truncated"):
            read_image(tmp_path / f"cut_{name}")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.png: cannot read image"):
        read_image(tmp_path / "empty.png")


def test_an_image_beyond_the_size_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    from meshinv.utils import images

    # 14000 x 14000 claimed by the header: Pillow's own decompression-bomb check raises in Image.open.
    (tmp_path / "bomb.png").write_bytes(png_bytes(14000, 14000, 8, 2))
    with pytest.raises(Image.DecompressionBombError):
        Image.open(tmp_path / "bomb.png")
    with pytest.raises(DataError, match=r"bomb\.png: image too large to read .*decompression bomb.*MAX_IMAGE_PIXELS"):
        read_image(tmp_path / "bomb.png")
    # 9000 x 9000 passes Pillow's check (81 Mpx < 179 Mpx) but not ours: refused from the header alone
    # (the file holds no pixel data, so decoding would have failed differently).
    assert 9000 * 9000 > images.MAX_IMAGE_PIXELS
    (tmp_path / "large.png").write_bytes(png_bytes(9000, 9000, 8, 2))
    with pytest.raises(DataError, match=r"large\.png: image is 9000x9000 \(81 Mpx\), more than the 67 Mpx"):
        read_image(tmp_path / "large.png")
    with pytest.raises(DataError, match=r"large\.png: mask is 9000x9000"):
        read_mask(tmp_path / "large.png")
    # The limit is looked up when reading, so a lower one applies to a real, decodable image.
    write_photo(tmp_path, "small.png")
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 32 * 31)
    with pytest.raises(DataError, match=r"small\.png: image is 32x32"):
        read_image(tmp_path / "small.png")


def test_image_shape_reads_the_header_only(tmp_path):
    from meshinv.utils.images import image_shape

    (tmp_path / "header.png").write_bytes(png_bytes(300, 200, 8, 2))  # no pixel data at all
    assert image_shape(tmp_path / "header.png") == (200, 300)
    with pytest.raises(DataError, match="damaged or truncated"):
        read_image(tmp_path / "header.png")


def test_one_image_reader():
    """Only meshinv/utils/images.py opens image files, so that what is read and refused is decided once."""
    readers = []
    for path in sorted([*(REPO_ROOT / "meshinv").rglob("*.py"), *(REPO_ROOT / "scripts").glob("*.py")]):
        if path.relative_to(REPO_ROOT).as_posix() != "meshinv/utils/images.py" and "Image.open(" in path.read_text():
            readers.append(path.relative_to(REPO_ROOT).as_posix())
    assert readers == []


# -- folder datasets: annotations ----------------------------------------------------------------------

@pytest.fixture
def annotated_folder(tmp_path):
    """images/a.png and images/b.png with masks and valid annotations."""
    for name in ("a.png", "b.png"):
        write_photo(tmp_path / "images", name, mask=False)
        write_photo(tmp_path, name)  # the mask, in tmp_path/masks
    (tmp_path / "a.png").unlink()
    (tmp_path / "b.png").unlink()
    annotations = {stem: {"class_id": 2, "camera": dict(CAMERA), "bbox": [6, 8, 26, 24]} for stem in ("a", "b")}
    return tmp_path, annotations


def open_with(folder: Path, annotations: dict) -> FolderDataset:
    (folder / "annotations.json").write_text(json.dumps(annotations))  # json writes NaN / Infinity as given
    return FolderDataset(folder, CropConfig(img_size=SIZE))


BAD_ANNOTATIONS = [
    ("class_id", "bird", r"\.class_id: 'bird' is not a class id"),
    ("class_id", -5, r"\.class_id: -5 is not a class id: expected an integer >= 0, or -1 / null for unknown"),
    ("class_id", 2.5, r"\.class_id: 2\.5 is not a class id"),
    ("class_id", True, r"\.class_id: True is not a class id"),
    ("bbox", [26, 24, 6, 8], r"\.bbox: \[26\.0, 24\.0, 6\.0, 8\.0\] is empty or reversed"),
    ("bbox", [6, 8, 6, 24], r"\.bbox: \[6\.0, 8\.0, 6\.0, 24\.0\] is empty or reversed"),
    ("bbox", [6, 8, 26], r"\.bbox \[x0, y0, x1, y1\]: expected a list of 4 numbers"),
    ("bbox", [6, 8, float("nan"), 24], r"\.bbox \[x0, y0, x1, y1\]: .* is not finite"),
    ("bbox", "6 8 26 24", r"\.bbox \[x0, y0, x1, y1\]: expected a list of 4 numbers"),
    ("camera", {**CAMERA, "scale": float("nan")}, r"\.camera\.scale: nan is not finite"),
    ("camera", {**CAMERA, "quaternion": [0, 0, 0, 0]}, r"\.camera\.quaternion: .* has \(almost\) zero length"),
    ("camera", {**CAMERA, "quaternion": [1, float("inf"), 0, 0]}, r"\.camera\.quaternion: .* is not finite"),
    ("camera", {**CAMERA, "translation": [1, 2, 3]}, r"\.camera\.translation: expected a list of 2 numbers"),
    ("camera", {**CAMERA, "scale": 0}, r"\.camera\.scale: 0\.0 is not positive"),
    ("camera", {**CAMERA, "scale": -3}, r"\.camera\.scale: -3\.0 is not positive"),
    ("camera", {"scale": 1}, r"\.camera: expected \{scale, translation"),
    ("camera", {}, r"\.camera: expected \{scale, translation"),
    ("camera", [1, 2, 3], r"\.camera: expected \{scale, translation"),
]


@pytest.mark.parametrize("key, value, message", BAD_ANNOTATIONS, ids=[f"{k}={v!r}" for k, v, _ in BAD_ANNOTATIONS])
def test_a_bad_annotation_fails_that_image_only_naming_file_and_image(annotated_folder, key, value, message):
    folder, annotations = annotated_folder
    annotations["a"][key] = value
    dataset = open_with(folder, annotations)  # opening succeeds: the error belongs to one image
    with pytest.raises(DataError, match=re.escape(str(folder / "annotations.json")) + r"\['a'\]" + message):
        dataset[0]
    assert dataset[1].image_id == "b" and dataset[1].class_id == 2


def test_an_annotation_that_is_no_object_fails_that_image_only(annotated_folder):
    folder, annotations = annotated_folder
    annotations["a"] = [1, 2]
    dataset = open_with(folder, annotations)
    with pytest.raises(DataError, match=r"annotations\.json\['a'\]: expected an object"):
        dataset[0]
    assert dataset[1].camera is not None
    (folder / "annotations.json").write_text("[1, 2]")
    with pytest.raises(DataError, match=r"annotations\.json: expected an object \{image stem: annotation\}"):
        FolderDataset(folder)


def test_valid_annotations_are_read_as_documented(annotated_folder):
    folder, annotations = annotated_folder
    annotations["a"].update(class_id=-1, camera={**CAMERA, "quaternion": [2.0, 0.0, 0.0, 0.0]})
    annotations["b"].update(class_id=3.0, camera=None, bbox=None)
    dataset = open_with(folder, annotations)
    a, b = dataset[0], dataset[1]
    assert a.class_id == -1 and b.class_id == 3 and b.camera is None
    assert a.camera[3:].tolist() == [1.0, 0.0, 0.0, 0.0]  # the quaternion is normalised


def test_check_dataset_checks_every_annotation_of_a_folder(annotated_folder):
    from meshinv.data.inspect import inspect_dataset

    folder, annotations = annotated_folder
    open_with(folder, annotations)
    assert inspect_dataset("folder", folder).text().splitlines()[0].endswith(": OK")
    annotations["b"]["camera"]["quaternion"] = [0, 0, 0, 0]
    open_with(folder, annotations)
    text = inspect_dataset("folder", folder).text()
    assert "usable, but 1 optional item(s) have PROBLEMS" in text.splitlines()[0]
    assert ("[!!] annotations of each image (optional): malformed - 1 of 2 images well annotated; first error: "
            f"{folder / 'annotations.json'}['b'].camera.quaternion") in text


# -- image ids ---------------------------------------------------------------------------------------------

UNSAFE_NAMES = ["..", ".", ".hidden", "a/b", "a\\b", "new\nline", "", "x" * 300]


@pytest.mark.parametrize("name", UNSAFE_NAMES, ids=repr)
def test_unsafe_names_get_safe_distinct_ids(name):
    from meshinv.data.sample import check_image_id, is_safe_image_id, safe_image_id

    image_id = safe_image_id(name)
    assert is_safe_image_id(image_id) and check_image_id(image_id) == image_id
    assert image_id == safe_image_id(name)  # deterministic
    assert image_id not in {safe_image_id(other) for other in UNSAFE_NAMES if other != name}
    assert Path("/out", image_id).resolve().parent == Path("/out").resolve()  # one component inside OUT
    with pytest.raises(DataError, match="is not a safe folder name"):
        check_image_id(name)
    assert safe_image_id("Bird_1_0004_104") == "Bird_1_0004_104"  # safe names are kept


def test_dotted_file_names_give_image_ids_inside_the_output_folder(tmp_path):
    folder = tmp_path / "photos"
    for name in ("...png", "..png", ".hidden.png", "plain.png"):
        write_photo(folder, name)
    dataset = FolderDataset(folder, CropConfig(img_size=SIZE))
    ids = dataset.image_ids()
    assert len(set(ids)) == 4 and "plain" in ids
    for index, image_id in enumerate(ids):
        assert not image_id.startswith(".") and "/" not in image_id
        assert dataset[index].image_id == image_id  # the sample carries the same id, and it loads
    with pytest.raises(DataError, match=r"image id: '\.\.' is not a safe folder name"):
        Sample(torch.zeros(3, 2, 2), torch.ones(1, 2, 2), None, -1, "..", "x/...png")


def test_the_inversion_records_bad_images_and_keeps_results_inside_out(tmp_path):
    """The batch job over a folder with a NaN camera, a class "bird", a decompression bomb, a 16-bit
    photo and a file named "...png": each bad one is recorded with a reason naming its file, the
    others are done, in folders inside OUT that a re-run recognises as finished."""
    from test_inversion import tiny_config, tiny_generator

    from meshinv.geometry.template import MeshTemplate
    from meshinv.inversion import Inverter, InversionRun

    folder = tmp_path / "data"
    for name in ("...png", "nan_camera.png", "bird.png", "plain.png"):
        write_photo(folder / "images", name, mask=False)
        write_photo(folder, name)
        (folder / name).unlink()
    deep = (np.random.default_rng(0).random((SIZE, SIZE)) * 65535).astype(np.uint16)
    Image.fromarray(deep).save(folder / "images" / "deep.png")
    (folder / "masks" / "plain.png").replace(folder / "masks" / "deep.png")
    write_photo(folder, "plain.png")
    (folder / "plain.png").unlink()
    (folder / "images" / "bomb.png").write_bytes(png_bytes(14000, 14000, 8, 2))
    annotations = {stem: {"camera": dict(CAMERA), "class_id": 1} for stem in ("..", "nan_camera", "bird", "plain", "deep")}
    annotations["nan_camera"]["camera"]["quaternion"] = [float("nan"), 0, 0, 0]
    annotations["bird"]["class_id"] = "bird"
    (folder / "annotations.json").write_text(json.dumps(annotations))
    out = tmp_path / "work" / "out"
    cfg = tiny_config()
    dataset = FolderDataset(folder, cfg.crop)
    inverter = Inverter(tiny_generator(), MeshTemplate.uv_sphere(), cfg, "cpu")
    job = replace(cfg, out_dir=str(out))
    summary = InversionRun(inverter, dataset, job).run(progress=False)
    images = summary["images"]
    dotted = dataset.image_ids()[0]
    assert {k for k, v in images.items() if v["status"] == "done"} == {dotted, "deep", "plain"}
    assert "annotations.json['nan_camera'].camera.quaternion" in images["nan_camera"]["reason"]
    assert "annotations.json['bird'].class_id: 'bird' is not a class id" in images["bird"]["reason"]
    assert "bomb.png: image too large" in images["bomb"]["reason"]
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["out"]  # nothing beside OUT
    assert (out / dotted / "result.pt").is_file() and dotted.startswith("__")
    again = InversionRun(inverter, dataset, job).run(progress=False)
    assert again["images"][dotted]["status"] == "done" and again["done"] == 3


# -- automatic masks and plain photo folders ------------------------------------------------------------

def test_photos_with_masks_go_on_when_automatic_masks_are_unavailable(tmp_path, monkeypatch):
    from meshinv.data.segment import SegmentConfig, segment_missing

    monkeypatch.setenv("MESHINV_PRETRAINED_DIR", str(tmp_path / "weights"))
    photos = tmp_path / "photos"
    write_photo(photos, "has_mask.png")
    write_photo(photos, "no_mask.png", mask=False)
    cache = tmp_path / "out" / "masks"
    dataset = FolderDataset(photos, CropConfig(img_size=SIZE), mask_dirs=[cache])
    counts = segment_missing(dataset, cache, SegmentConfig(weights="no_such_maskrcnn.pth"))
    assert counts == {"missing": 1, "found": 0, "nothing": 0, "unavailable": 1}
    assert dataset[0].image_id == "has_mask" and dataset[0].mask.sum() > 0
    with pytest.raises(DataError) as error:
        dataset[1]
    message = str(error.value)
    assert "no_mask" in message and "'no_such_maskrcnn.pth' not found" in message
    assert str(tmp_path / "weights") in message  # the folders searched
    assert f"Put a mask at {photos / 'masks' / 'no_mask.png'}" in message
    assert not (cache / "no_mask.none").exists()  # nothing remembered: a re-run with the weights segments it


def test_data_accepts_a_plain_photo_folder(tmp_path):
    photos = tmp_path / "photos"
    write_photo(photos, "has_mask.png")
    write_photo(photos, "no_mask.png", mask=False)
    dataset = open_dataset(photos, CropConfig(img_size=SIZE))
    assert isinstance(dataset, FolderDataset) and dataset.image_ids() == ["has_mask", "no_mask"]
    assert dataset[0].mask.sum() > 0
    with pytest.raises(DataError, match=r"no_mask: no mask at .*masks/no_mask\.png \(automatic masks: "
                                        r"scripts/invert\.py --images DIR"):
        dataset[1]


def test_invert_images_with_missing_segmenter_weights_inverts_the_masked_photos(tmp_path):
    """scripts/invert.py --images: the photo with a user mask is reconstructed, the one without gets a
    reason naming the weight file and where its mask could go, and the run succeeds."""
    from test_inversion import tiny_generator

    from meshinv.models import save_generator_checkpoint

    photos = tmp_path / "photos"
    write_photo(photos, "has_mask.png")
    write_photo(photos, "no_mask.png", mask=False)
    (photos / "annotations.json").write_text(json.dumps({"has_mask": {"camera": CAMERA}}))  # no camera predictor
    checkpoint = tmp_path / "prior.pt"
    save_generator_checkpoint(checkpoint, tiny_generator())
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "scripts/invert.py", "--config", "configs/synthetic.yaml", "--images", str(photos),
         "--out", str(out), "--checkpoint", str(checkpoint), "--set", "device=cpu", "--set", "model.latent_dim=8",
         "--set", f"inversion.crop.img_size={SIZE}", "--set", "inversion.select_num=2",
         "--set", "inversion.iterations=[2,2]", "--set", "inversion.z_lrs=[0.1,0.05]",
         "--set", "inversion.camera_lrs=[0.01,0.005]", "--set", "inversion.export.turntable_frames=0",
         "--set", "segment.weights=no_such_maskrcnn.pth"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "MESHINV_PRETRAINED_DIR": str(tmp_path / "weights")})
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"]["has_mask"]["status"] == "done" and summary["done"] == 1
    reason = summary["images"]["no_mask"]["reason"]
    assert "no_such_maskrcnn.pth" in reason and str(photos / "masks" / "no_mask.png") in reason
