"""The inversion job (meshinv/inversion/run.py, output.py, scripts/invert.py): every per-image failure
is recorded and the run goes on, nothing non-finite is ever "done", result folders stay inside OUT,
one writer at a time, the summary accounts for the whole folder, stale temporary files go, a
dataset folder is never written into, missing inputs are reported together before any work, and
the resume guard compares exactly what decides a result."""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import logging
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO_ROOT, output_lock_holder
from meshinv.data.preprocess import CropConfig
from meshinv.data.segment import SegmentConfig
from meshinv.data.sample import DataError, Sample
from meshinv.geometry.template import MeshTemplate
from meshinv.inversion import (
    ExportConfig, InversionAlgorithm, InversionConfig, InversionJob, InversionLossConfig, InversionRun, Inverter,
    MissingInputsError, OutputFolder, OutputFolderError, check_job_inputs, validate_inversion,
)
from meshinv.inversion.camera_init import resolve_predictions_path
from meshinv.inversion.output import result_settings
from meshinv.models import ConvMeshGenerator, save_generator_checkpoint
from meshinv.utils.config import ConfigError, to_dict
from meshinv.utils.io import atomic_write, file_sha256, save_json

SIZE = 32
GOOD_CAMERA = torch.tensor([0.6, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def tiny_generator() -> ConvMeshGenerator:
    torch.manual_seed(0)
    return ConvMeshGenerator(latent_dim=8, n_classes=8, texture_resolution=128, width_multiplier=0.0625).eval()


def job_config(out: Path, **overrides) -> InversionConfig:
    """A run of a few milliseconds per image: 2 z candidates, 2 steps, no VGG, no turntable."""
    cfg = InversionConfig(crop=CropConfig(img_size=SIZE), select_num=2, init_batch_size=2, iterations=[2],
                          z_lrs=[0.1], camera_lrs=[0.01], loss=InversionLossConfig(feature_weight=0.0),
                          out_dir=str(out), batch_size=3, export=ExportConfig(turntable_frames=0))
    return dataclasses.replace(cfg, **overrides)


def disc_sample(image_id: str, camera: torch.Tensor = GOOD_CAMERA) -> Sample:
    coords = (torch.arange(SIZE) + 0.5) / SIZE * 2 - 1
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    mask = ((x ** 2 + y ** 2) < 0.4).float()[None]
    image = torch.where(mask > 0, 0.4, -0.6).expand(3, -1, -1).clone()
    return Sample(image, mask, camera.clone(), 2, image_id, f"/photos/{image_id}.png")


class ListDataset:
    """Items by id: a Sample, or an exception that reading the item raises."""

    root = "memory"

    def __init__(self, items: dict):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def image_ids(self) -> list[str]:
        return list(self.items)

    def __getitem__(self, index: int) -> Sample:
        item = list(self.items.values())[index]
        if isinstance(item, BaseException):
            raise item
        return item


def make_run(cfg: InversionConfig, items: dict, **kwargs) -> InversionRun:
    inverter = Inverter(tiny_generator(), MeshTemplate.uv_sphere(), cfg)
    return InversionRun(inverter, ListDataset(items), cfg, **kwargs)


def read_summary(out: Path) -> dict:
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads((out / "summary.json").read_text(), parse_constant=refuse)


# -- 1. any per-image failure is recorded, the run goes on ----------------------------------------------

@pytest.mark.parametrize("mirror_average", [False, True])
def test_a_predictor_gives_every_start_camera_plain_or_mirror_averaged(tmp_path, mirror_average):
    from meshinv.inversion import load_record
    from meshinv.inversion.config import CameraInitConfig
    from meshinv.models.camera import CameraPredictor

    torch.manual_seed(1)
    predictor = CameraPredictor(image_size=64, rotation_head="6d", masked_input=True).eval()
    items = {"a": disc_sample("a"), "b": disc_sample("b")}
    cfg = job_config(tmp_path / "out", camera_init=CameraInitConfig(mirror_average=mirror_average,
                                                                      use_dataset_camera=False))
    summary = make_run(cfg, items, camera_predictor=predictor).run(progress=False)
    assert summary["done"] == 2
    images = torch.stack([items[k].image for k in "ab"])
    masks = torch.stack([items[k].mask for k in "ab"])
    with torch.no_grad():
        expected = (predictor.mirror_averaged if mirror_average else predictor)(images, masks)
    for i, image_id in enumerate("ab"):
        record = load_record(tmp_path / "out" / image_id)
        assert record.camera_source == "predictor"
        torch.testing.assert_close(record.camera_init, expected[i])


def test_any_per_image_failure_is_recorded_and_its_batch_mates_still_finish(tmp_path, monkeypatch):
    out = tmp_path / "out"
    items = {"a": disc_sample("a"),
             "bomb": Image.DecompressionBombError("Image size (196000000 pixels) exceeds limit"),
             "key": KeyError("camera"),
             "b": disc_sample("b"), "deep": disc_sample("deep"), "c": disc_sample("c")}
    run = make_run(job_config(out), items)
    engine = run.inverter.invert

    def failing_for_deep(images, masks, cameras, class_ids, ids, **kwargs):
        if "deep" in ids:
            raise ZeroDivisionError("deep in the engine")
        return engine(images, masks, cameras, class_ids, ids, **kwargs)

    monkeypatch.setattr(run.inverter, "invert", failing_for_deep)
    summary = run.run(progress=False)
    images = summary["images"]
    assert {k for k, v in images.items() if v["status"] == "done"} == {"a", "b", "c"}  # a, b shared a batch with deep
    assert "DecompressionBombError" in images["bomb"]["reason"] and "exceeds limit" in images["bomb"]["reason"]
    assert "KeyError" in images["key"]["reason"]
    assert "ZeroDivisionError: deep in the engine" in images["deep"]["reason"]
    assert read_summary(out) == summary
    assert not (out / "deep").exists()


def test_an_interrupt_stops_the_run_after_writing_the_summary(tmp_path):
    out = tmp_path / "out"
    items = {"bad": DataError("/photos/bad.png: unreadable"), "stop": KeyboardInterrupt(),
             "later": disc_sample("later")}
    run = make_run(job_config(out, batch_size=8), items)
    with pytest.raises(KeyboardInterrupt):
        run.run(progress=False)
    summary = read_summary(out)  # written although the first batch never finished
    assert summary["images"] == {"bad": {"status": "failed", "reason": "/photos/bad.png: unreadable"}}


# -- 2. non-finite inputs and results -------------------------------------------------------------------

def test_unusable_cameras_are_refused_per_image_and_by_the_engine(tmp_path):
    out = tmp_path / "out"
    nan_camera = GOOD_CAMERA.clone()
    nan_camera[4] = float("nan")
    zero_quaternion = GOOD_CAMERA.clone()
    zero_quaternion[3:] = 0
    items = {"nan": disc_sample("nan", nan_camera), "zero_q": disc_sample("zero_q", zero_quaternion),
             "ok": disc_sample("ok")}
    summary = make_run(job_config(out), items).run(progress=False)
    assert summary["images"]["ok"]["status"] == "done"
    assert "NaN or infinite" in summary["images"]["nan"]["reason"]
    assert "quaternion is (nearly) zero" in summary["images"]["zero_q"]["reason"]
    assert not (out / "nan").exists() and not (out / "zero_q").exists()
    # The engine does not trust its caller: it names the images it cannot start from.
    inverter = Inverter(tiny_generator(), MeshTemplate.uv_sphere(), job_config(out))
    batch = [disc_sample("fine"), disc_sample("broken", nan_camera)]
    with pytest.raises(ValueError, match="broken: the camera has NaN"):
        inverter.invert(torch.stack([s.image for s in batch]), torch.stack([s.mask for s in batch]),
                        torch.stack([s.camera for s in batch]), torch.tensor([2, 2]), ["fine", "broken"])


def test_a_non_finite_result_is_a_failure_and_writes_nothing(tmp_path, monkeypatch):
    out = tmp_path / "out"
    run = make_run(job_config(out), {"x": disc_sample("x"), "diverged": disc_sample("diverged")})
    engine = run.inverter.invert

    def diverging(*args, **kwargs):
        result = engine(*args, **kwargs)
        result.z[1] = float("nan")
        result.vertices[1, 0, 0] = float("inf")
        result.losses[1]["total"] = float("nan")
        return result

    monkeypatch.setattr(run.inverter, "invert", diverging)
    summary = run.run(progress=False)
    assert summary["images"]["x"]["status"] == "done"
    failure = summary["images"]["diverged"]
    assert failure["status"] == "failed"
    assert "non-finite z, vertices, loss total" in failure["reason"]
    assert not (out / "diverged").exists()  # no mesh of NaN vertices, no result.pt
    assert summary["done"] == 1 and summary["failed"] == 1


def test_json_files_are_strict_json(tmp_path):
    save_json(tmp_path / "x.json", {"nan": float("nan"), "values": [1.5, float("inf"), -float("inf")],
                                    "numpy": np.float32(2.5)})
    text = (tmp_path / "x.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"nan": None, "values": [1.5, None, None], "numpy": 2.5}


def test_no_json_is_written_around_save_json():
    """Every JSON file the project writes goes through meshinv.utils.io (strict JSON)."""
    offenders = []
    for folder in ("meshinv", "scripts", "bench"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            if path.name != "io.py" and ("json.dump(" in path.read_text() or "json.dumps(" in path.read_text()):
                offenders.append(str(path.relative_to(REPO_ROOT)))
    # Printing a JSON view to the terminal and quoting a command-line value are not files.
    assert sorted(offenders) == ["bench/inversion.py", "meshinv/utils/config.py"]


# -- 3. result folders stay inside OUT ------------------------------------------------------------------

def test_result_folders_stay_inside_the_output_folder(tmp_path, caplog):
    parent = tmp_path / "parent"
    out = parent / "out"
    bad = ["..", ".", "a/b", ".hidden", "config.yaml", "x" * 300]
    # (The data layer makes such ids safe; the job must not rely on it, and refuses them before reading.)
    items = {image_id: AssertionError("read although its id was refused") for image_id in bad}
    items["ok"] = disc_sample("ok")
    summary = make_run(job_config(out, batch_size=8), items).run(progress=False)
    assert sorted(os.listdir(parent)) == ["out"]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["ok"]
    assert summary["images"]["ok"]["status"] == "done" and summary["done"] == 1
    for image_id in bad:
        assert "cannot name a result folder" in summary["images"][image_id]["reason"], image_id
    # A re-run counts the finished image as done (and retries the refused ones).
    with caplog.at_level(logging.INFO, logger="meshinv.inversion.run"):
        make_run(job_config(out, batch_size=8), items).run(progress=False)
    assert "7 images selected: 1 already done, 6 to invert" in caplog.text
    # A folder that is a symlink out of OUT is refused too.
    (out / "link").symlink_to(tmp_path)
    with pytest.raises(DataError, match="leads out of the output folder"):
        OutputFolder(out).result_folder("link")


# -- 4. one writer at a time; the summary is a complete account ----------------------------------------

def test_a_second_writer_is_refused_naming_the_folder_and_the_holder(tmp_path, caplog):
    out = tmp_path / "out"
    with output_lock_holder(out) as holder:
        with pytest.raises(OutputFolderError) as info:
            with OutputFolder(out).locked():
                pass
        message = str(info.value)
        assert str(out) in message and f"pid {holder.pid} on host" in message
    # The holder was killed (SIGKILL): its lock is taken over, with a log line naming it.
    with caplog.at_level(logging.WARNING, logger="meshinv.inversion.output"):
        with OutputFolder(out).locked() as folder:
            assert folder.is_locked
    assert f"pid {holder.pid}" in caplog.text and "taking over" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="meshinv.inversion.output"):
        with OutputFolder(out).locked():  # released cleanly last time: nothing to take over
            pass
    assert "taking over" not in caplog.text


def test_the_summary_accounts_for_every_result_in_the_folder(tmp_path):
    out = tmp_path / "out"
    items = {"a": disc_sample("a"), "bad": DataError("/photos/bad.png: unreadable"), "b": disc_sample("b"),
             "c": disc_sample("c")}
    assert make_run(job_config(out, limit=4), items).run(progress=False)["done"] == 3
    # A smaller limit does not shrink the account, and keeps the earlier failure.
    summary = make_run(job_config(out, limit=1), items).run(progress=False)
    assert summary["done"] == 3 and summary["failed"] == 1 and set(summary["images"]) == {"a", "bad", "b", "c"}
    # A result written just before a kill (no summary entry) is counted from the result itself; a
    # damaged result outside the selection is reported as such.
    (out / "summary.json").unlink()
    (out / "c" / "result.pt").write_bytes(b"damaged")
    summary = make_run(job_config(out, limit=1), items).run(progress=False)
    assert summary["images"]["b"]["status"] == "done"
    assert summary["images"]["c"]["status"] == "failed" and "damaged result" in summary["images"]["c"]["reason"]
    # Selected again, the damaged one is redone.
    summary = make_run(job_config(out), items).run(progress=False)
    assert summary["images"]["c"]["status"] == "done" and summary["done"] == 3


# -- 5. stale temporary files ---------------------------------------------------------------------------

def test_temporary_files_of_a_killed_write_are_removed_by_the_next_run(tmp_path):
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    with pytest.raises(RuntimeError):  # copies of atomic_write's temporary file, as a SIGKILL leaves it
        with atomic_write(out / "a" / "mesh.obj") as f:
            f.write("v 0 0 0\n")
            temp = next(p for p in (out / "a").iterdir() if p.name.endswith(".tmp"))
            os.link(temp, out / "a" / temp.name.replace(".tmp", "x.tmp"))  # not atomic_write's pattern
            os.link(temp, out / temp.name)                                  # in OUT itself
            os.link(temp, out / "a" / temp.name.replace(".mesh.obj.", ".render.png."))
            raise RuntimeError("killed")
    keep = [out / "notes.tmp", out / ".hidden_notes", out / "a" / temp.name.replace(".tmp", "x.tmp")]
    for path in keep[:2]:
        path.write_text("mine")
    stale = [out / temp.name, out / "a" / temp.name.replace(".mesh.obj.", ".render.png.")]
    with pytest.raises(RuntimeError, match="locked"):
        OutputFolder(out).remove_stale_temp_files()  # only under the lock
    make_run(job_config(out), {"a": disc_sample("a")}).run(progress=False)
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in keep)


# -- 6. a dataset folder is never written into ----------------------------------------------------------

def load_invert_script(monkeypatch):
    spec = importlib.util.spec_from_file_location("invert_script", REPO_ROOT / "scripts" / "invert.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "invert_script", module)
    spec.loader.exec_module(module)
    return module


def run_script(monkeypatch, *args) -> int:
    monkeypatch.setattr(sys, "argv", ["invert.py", "--config", "configs/synthetic.yaml", "--set", "device=cpu",
                                      *args])
    return load_invert_script(monkeypatch).main()


def photo_folder(root: Path, stems=("p0", "p1"), masks=True) -> Path:
    (root / "images").mkdir(parents=True)
    for stem in stems:
        Image.new("RGB", (48, 48), (90, 120, 150)).save(root / "images" / f"{stem}.png")
        if masks:
            (root / "masks").mkdir(exist_ok=True)
            mask = Image.new("L", (48, 48))
            mask.paste(255, (12, 12, 36, 36))
            mask.save(root / "masks" / f"{stem}.png")
    return root


def test_an_output_folder_that_is_or_holds_a_dataset_is_refused(tmp_path, monkeypatch, capsys):
    dataset = photo_folder(tmp_path / "dataset" / "test")
    for name in ("config.yaml", "summary.json"):
        (tmp_path / "dataset" / name).write_text("the dataset's own\n")
        (dataset / name).write_text("the split's own\n")
    for out in (dataset, tmp_path / "dataset"):
        assert run_script(monkeypatch, "--data", str(dataset), "--out", str(out)) == 1
        assert f"the output folder {out} is the dataset folder" in capsys.readouterr().err
    other = photo_folder(tmp_path / "another_dataset")
    assert run_script(monkeypatch, "--data", str(dataset), "--out", str(other)) == 1
    assert f"the output folder {other} holds a dataset (folder)" in capsys.readouterr().err
    for folder in (dataset, tmp_path / "dataset"):
        assert (folder / "config.yaml").read_text().endswith("own\n")
        assert not (folder / "settings.json").exists() and not (folder / "log.txt").exists()
    assert not (other / "config.yaml").exists()
    # An inversion's own folder is fine, whatever its image ids (even one named `images`).
    results = tmp_path / "results"
    (results / "images").mkdir(parents=True)
    (results / "images" / "result.pt").write_bytes(b"")
    OutputFolder(results).refuse_dataset(dataset)


# -- 7. everything checked before any work, all missing pieces at once ----------------------------------

def test_missing_inputs_are_reported_together_before_any_work(tmp_path, monkeypatch, capsys):
    from meshinv.data import segment

    photos = photo_folder(tmp_path / "photos", masks=False)

    class NoSegmenter:
        def __init__(self, *args, **kwargs):
            raise AssertionError("segmentation ran before the inputs were checked")

    monkeypatch.setattr(segment, "Segmenter", NoSegmenter)
    out = tmp_path / "out"
    code = run_script(monkeypatch, "--images", str(photos), "--out", str(out), "--checkpoint", "no_prior_4f2a.pt",
                      "--set", "inversion.loss.feature_weight=0.04",
                      "--set", "inversion.loss.vgg_weights=no_vgg_4f2a.pth",
                      "--set", "inversion.camera_init.predictor=no_predictor_4f2a.pt",
                      "--set", "inversion.camera_init.predictions=no_predictions_4f2a.pth",
                      "--set", "segment.weights=no_maskrcnn_4f2a.pth")
    assert code == 1
    message = capsys.readouterr().err
    for piece in ("generator checkpoint (inversion.checkpoint): weight file 'no_prior_4f2a.pt' not found",
                  "VGG-19 weights", "no_vgg_4f2a.pth", "no_predictor_4f2a.pt",
                  f"no_predictions_4f2a.pth not found (looked at {Path.cwd() / 'no_predictions_4f2a.pth'} and "
                  f"{photos / 'no_predictions_4f2a.pth'}", "no_maskrcnn_4f2a.pth",
                  "none of the 2 photos has a mask", str(REPO_ROOT / "pretrained"), "pretrained/README.md"):
        assert piece in message, piece
    assert message.count("this run cannot start") == 1
    assert not (out / "masks").exists() and not (out / "config.yaml").exists()
    # A generator path (not a bare name) says where it was looked for, too.
    assert run_script(monkeypatch, "--data", str(photos), "--out", str(out), "--checkpoint", "outputs/gone/prior.pt",
                      "--set", "inversion.loss.feature_weight=0") == 1
    message = capsys.readouterr().err
    assert "outputs/gone/prior.pt not found" in message and str(Path.cwd()) in message
    assert "pretrained/README.md" in message


def test_a_prior_made_for_another_template_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    from meshinv.geometry.template import TemplateConfig

    photos = photo_folder(tmp_path / "photos")
    checkpoint, out = tmp_path / "prior16.pt", tmp_path / "out"
    save_generator_checkpoint(checkpoint, tiny_generator(), template=TemplateConfig(rings=16))
    code = run_script(monkeypatch, "--data", str(photos), "--out", str(out), "--checkpoint", str(checkpoint),
                      "--set", "model.latent_dim=8", "--set", "template.rings=31",
                      "--set", "inversion.loss.feature_weight=0")
    message = capsys.readouterr().err
    assert code == 1
    assert str(checkpoint) in message and "template.rings is 16 in the checkpoint but 31 in the config" in message
    assert not (out / "settings.json").exists() and not (out / "config.yaml").exists()


def test_photos_with_masks_go_through_when_the_segmenter_is_missing(tmp_path, caplog):
    photos = photo_folder(tmp_path / "photos", stems=("p0", "p1", "p2"))
    (photos / "masks" / "p2.png").unlink()
    cfg = job_config(tmp_path / "out", images=str(photos), checkpoint=str(tmp_path / "prior.pt"))
    save_generator_checkpoint(cfg.checkpoint, tiny_generator())
    with caplog.at_level(logging.WARNING):
        inputs = check_job_inputs(cfg, SegmentConfig(weights="no_maskrcnn_4f2a.pth"), OutputFolder(cfg.out_dir))
    assert inputs.without_masks == ["p2"] and not inputs.can_segment
    assert "1 of 3 photos have no mask" in caplog.text
    for stem in ("p0", "p1"):  # with no photo left to go through, the segmenter is a missing input
        (photos / "masks" / f"{stem}.png").unlink()
    with pytest.raises(MissingInputsError, match="no_maskrcnn_4f2a.pth' not found(.|\n)*none of the 3 photos"):
        check_job_inputs(cfg, SegmentConfig(weights="no_maskrcnn_4f2a.pth"), OutputFolder(cfg.out_dir))


def test_vgg_weights_are_fetched_up_front_or_the_term_is_left_out_as_configured(tmp_path, weight_folders,
                                                                               monkeypatch):
    from conftest import FakeServer, register_weights
    from meshinv.losses.vgg import VGG19_WEIGHTS_FILE, vgg19_relu3_1
    from meshinv.utils.weights import WeightSource, known_weights

    photos = photo_folder(tmp_path / "photos")
    cfg = job_config(tmp_path / "out", data=str(photos), checkpoint=str(tmp_path / "prior.pt"),
                     loss=InversionLossConfig(feature_weight=0.04))
    save_generator_checkpoint(cfg.checkpoint, tiny_generator())
    out = OutputFolder(cfg.out_dir)
    url = known_weights()[VGG19_WEIGHTS_FILE].url
    # Offline under the default (error): refused up front, naming the file, its URL and the folders.
    with pytest.raises(MissingInputsError) as info:
        check_job_inputs(cfg, SegmentConfig(), out)
    message = str(info.value)
    for piece in (VGG19_WEIGHTS_FILE, url, "downloads are off", str(weight_folders), "on_missing_vgg: skip"):
        assert piece in message, piece
    # Under skip the run goes on without the term, and says which term and why.
    skip = dataclasses.replace(cfg, loss=InversionLossConfig(feature_weight=0.04, on_missing_vgg="skip"))
    inputs = check_job_inputs(skip, SegmentConfig(), out)
    assert inputs.vgg is None and list(inputs.left_out) == ["feature"]
    for piece in (VGG19_WEIGHTS_FILE, url, "downloads are off", "on_missing_vgg: skip"):
        assert piece in inputs.left_out["feature"], piece
    # Online, the first run fetches the file here, before any work, and uses it.
    server = FakeServer()
    monkeypatch.setattr(torch.hub, "urlopen", server)
    monkeypatch.setenv("MESHINV_OFFLINE", "0")
    register_weights(monkeypatch, VGG19_WEIGHTS_FILE, WeightSource(url, False, "torchvision"))  # not their bytes
    buffer = io.BytesIO()
    torch.save({f"features.{k}": v for k, v in vgg19_relu3_1().state_dict().items()}, buffer)
    server.files[url] = buffer.getvalue()
    inputs = check_job_inputs(skip, SegmentConfig(), out)
    assert inputs.vgg is not None and inputs.vgg.pretrained and inputs.left_out == {}
    assert server.requests == [url] and (weight_folders / VGG19_WEIGHTS_FILE).is_file()
    assert not (out.path / "settings.json").exists()


def test_relative_prediction_files_follow_the_data_folder(tmp_path, monkeypatch):
    data = tmp_path / "cub"
    (data / "cache").mkdir(parents=True)
    (data / "cache" / "cmr_pred_cam.pth").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    assert resolve_predictions_path("cache/cmr_pred_cam.pth", data) == data / "cache" / "cmr_pred_cam.pth"
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "cmr_pred_cam.pth").write_bytes(b"y")  # the working directory's comes first
    assert resolve_predictions_path("cache/cmr_pred_cam.pth", data) == Path("cache/cmr_pred_cam.pth")
    with pytest.raises(DataError, match="inversion.camera_init.predictions: other.pth not found"):
        resolve_predictions_path("other.pth", data)


# -- 8. the algorithm / job split and the resume guard --------------------------------------------------

def test_the_engine_sees_only_the_algorithm():
    algorithm = {f.name for f in dataclasses.fields(InversionAlgorithm)}
    job = {f.name for f in dataclasses.fields(InversionJob)}
    assert not algorithm & job
    assert {f.name for f in dataclasses.fields(InversionConfig)} == algorithm | job
    cfg = InversionConfig(out_dir="somewhere", limit=3, select_num=7, loss=InversionLossConfig(feature_weight=0.0))
    inverter = Inverter(tiny_generator(), MeshTemplate.uv_sphere(), cfg)
    assert type(inverter.cfg) is InversionAlgorithm and inverter.cfg.select_num == 7
    assert not hasattr(inverter.cfg, "out_dir") and not hasattr(inverter.cfg, "batch_size")


def experiment(**inversion) -> dict:
    from meshinv.config import ExperimentConfig

    cfg = ExperimentConfig()
    cfg.inversion = dataclasses.replace(cfg.inversion, **inversion)
    return to_dict(cfg)


def test_the_resume_guard_compares_exactly_what_decides_a_result(tmp_path):
    out = OutputFolder(tmp_path / "out")
    checkpoint, copy = tmp_path / "prior.pt", tmp_path / "moved" / "prior.pt"
    checkpoint.write_bytes(b"weights")
    copy.parent.mkdir()
    copy.write_bytes(b"weights")
    with out.locked():
        out.check_and_record_settings(experiment(), checkpoint)
        (out.path / "done_image").mkdir()
        (out.path / "done_image" / "result.pt").write_bytes(b"")
        # Job settings may change, and so may the checkpoint's path when its content is the same.
        for change in ({"limit": 1}, {"batch_size": 2}, {"image_ids": ["x"]}, {"tensorboard": True},
                       {"out_dir": "elsewhere"}, {"data": "other"}, {"checkpoint": str(copy)},
                       {"export": ExportConfig(turntable_size=64, turntable_frames=8, mesh=False)},
                       # and speed-only algorithm keys: how much is computed at once (or pruned), not what
                       {"init_batch_size": 7, "recompute_target_features": True,
                        "loss": InversionLossConfig(chunk_size=1000, chamfer_pruning=False)}):
            out.check_and_record_settings(experiment(**change), copy)
        # Algorithm settings may not, and the refusal names each key.
        for change, key in (({"iterations": [1, 2, 3, 4]}, "inversion.iterations"),
                            ({"select_num": 3}, "inversion.select_num"),
                            ({"crop": CropConfig(img_size=64)}, "inversion.crop.img_size"),
                            ({"loss": InversionLossConfig(mask_weight=1.0)}, "inversion.loss.mask_weight"),
                            ({"seed": 1}, "inversion.seed")):
            with pytest.raises(OutputFolderError, match=rf"holds 1 results made with other settings: {key} \("):
                out.check_and_record_settings(experiment(**change), copy)
        other = experiment()
        other["template"]["rings"] += 1
        with pytest.raises(OutputFolderError, match="template.rings"):
            out.check_and_record_settings(other, copy)
        # The same settings compute another loss where a term is left out for lack of weights.
        with pytest.raises(OutputFolderError, match=r"loss terms left out for lack of weights \(null there, "):
            out.check_and_record_settings(experiment(), copy, left_out={"feature": "no VGG-19 here"})
        checkpoint.write_bytes(b"other weights")
        with pytest.raises(OutputFolderError, match="generator checkpoint sha256"):
            out.check_and_record_settings(experiment(), checkpoint)
    # A folder written before settings.json existed is checked against its config.yaml.
    (out.path / "settings.json").unlink()
    (out.path / "config.yaml").write_text(json.dumps(experiment(select_num=11)))
    with out.locked():
        with pytest.raises(OutputFolderError, match="inversion.select_num"):
            out.check_and_record_settings(experiment(), copy)
        out.check_and_record_settings(experiment(select_num=11, limit=2), copy)
    assert json.loads((out.path / "settings.json").read_text()) == result_settings(experiment(select_num=11),
                                                                                  file_sha256(copy))


@pytest.mark.parametrize("key, value, message", [
    ("select_num", 0, "inversion.select_num must be >= 1, got 0"),
    ("iterations", [], "inversion.iterations must list at least one stage"),
    ("iterations", [-1], r"inversion.iterations\[0\] must be >= 1, got -1"),
    ("crop", CropConfig(img_size=0), "inversion.crop.img_size must be a positive multiple of 4"),
    ("crop", CropConfig(img_size=30), "inversion.crop.img_size must be a positive multiple of 4"),
    ("batch_size", 0, "inversion.batch_size must be >= 1, got 0"),
    ("z_lrs", [math.nan] * 4, r"inversion.z_lrs\[0\] must be a finite number > 0, got nan"),
    ("limit", -1, "inversion.limit must be >= 0 or null, got -1"),
    ("export", ExportConfig(turntable_size=0), "inversion.export.turntable_size must be >= 1"),
    ("loss", InversionLossConfig(mask_weight=math.nan), "inversion.loss.mask_weight must be a finite number >= 0"),
])
def test_settings_no_run_could_use_are_refused_naming_the_key(key, value, message):
    cfg = dataclasses.replace(InversionConfig(), **{key: value})
    with pytest.raises(ConfigError, match=message):
        validate_inversion(cfg)


def test_inversion_settings_use_the_shared_checks():
    """Each class checks its own keys like every other section (SettingError, relative key);
    validate_inversion and the experiment config name them in full, once."""
    from meshinv.config import ExperimentConfig
    from meshinv.utils.config import SettingError, validate_config

    cfg = dataclasses.replace(InversionConfig(), camera_lrs=[0.01] * 3)
    with pytest.raises(SettingError, match=r"^camera_lrs must have one entry per stage of iterations \(4\), got 3$"):
        cfg.validate()
    with pytest.raises(SettingError, match=r"^inversion.camera_lrs must have one entry per stage"):
        validate_inversion(cfg)
    experiment = ExperimentConfig(inversion=dataclasses.replace(InversionConfig(), export=ExportConfig(turntable_size=0)))
    with pytest.raises(SettingError, match=r"^inversion.export.turntable_size must be >= 1, got 0$"):
        validate_config(experiment)
    with pytest.raises(SettingError, match=r"^inversion.data must not be empty when images is not set"):
        validate_inversion(dataclasses.replace(InversionConfig(), data=""))


def test_the_script_refuses_a_bad_setting_before_any_work(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    try:
        code = run_script(monkeypatch, "--out", str(out), "--set", "inversion.limit=-1")
    except SystemExit as refused:  # when the command line's own config check refuses it
        code = refused.code
    assert code not in (0, None)
    assert "inversion.limit must be >= 0 or null, got -1" in capsys.readouterr().err
    assert not out.exists()
