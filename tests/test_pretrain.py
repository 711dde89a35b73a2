"""Pretraining: a short run writes every artefact, resuming equals not stopping (bit for bit), a
SIGKILLed run resumes, a run folder is neither overwritten nor resumed with other settings, bad
settings are refused before any work, two gloo processes keep identical replicas, and the Frechet
signal is the FID formula."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT
from meshinv.data.preprocess import CropConfig
from meshinv.data.synthetic import SyntheticDataset
from meshinv.datagen.pseudogt import PseudoGTConfig, build_pseudogt_folder
from meshinv.datagen.synthetic import SyntheticConfig, SyntheticGenerator, write_split
from meshinv.geometry.template import TemplateConfig
from meshinv.models import load_generator
from meshinv.models.generator import ConvMeshGenerator
from meshinv.config import ExperimentConfig
from meshinv.training import (
    LATEST, ModelConfig, PCAFrechet, PretrainConfig, RunFolderError, frechet_distance, prepare_run_folder, pretrain,
)
from meshinv.training.loop import _lr_factor
from meshinv.training.loss import hinge_discriminator, hinge_generator, masked_mean
from meshinv.training.samples import draw_samples
from meshinv.utils.config import load_config, saved_run_config

TINY_MODEL = dict(latent_dim=8, n_classes=8, texture_resolution=128, width_multiplier=0.0625, patch_base_channels=8)


@pytest.fixture(scope="module")
def pseudogt(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain_data")
    cfg = SyntheticConfig(image_size=64, texture_size=128, out_dir=str(root))
    generator = SyntheticGenerator(cfg)
    split = write_split(cfg, "train", 8, generator)
    dataset = SyntheticDataset(split, CropConfig(img_size=64))
    build_pseudogt_folder(dataset, generator.template, PseudoGTConfig(texture_size=128), split / "pseudogt_128x128")
    return split


def train_config(pseudogt, out_dir, **overrides) -> PretrainConfig:
    base = dict(data=str(pseudogt / "pseudogt_128x128"), gt_dir=str(pseudogt / "gt"), out_dir=str(out_dir),
                batch_size=4, render_size=32, max_steps=6, log_every=1, sample_every=3, checkpoint_every=3,
                frechet_every=3, frechet_samples=16, frechet_components=4)
    base.update(overrides)
    return PretrainConfig(**base)


def test_short_run_writes_checkpoints_samples_and_metrics(pseudogt, tmp_path):
    summary = pretrain(ModelConfig(**TINY_MODEL), train_config(pseudogt, tmp_path), TemplateConfig(), torch.device("cpu"))
    assert summary["iterations"] == 6
    assert all(np.isfinite(v) for v in summary["losses"].values())
    assert {"g_uv", "g_image", "g_smooth", "d_fake", "d_real", "d_image_fake", "d_image_real"} <= set(summary["losses"])
    assert summary["frechet"]["frechet_mesh"] > 0
    for name in (LATEST, "generator_ema.pt", "summary.json", "samples/0000003.png", "samples/0000006.png"):
        assert (tmp_path / name).is_file(), name
    assert list((tmp_path / "tensorboard").glob("events.*"))
    generator = load_generator(tmp_path / "generator_ema.pt")
    texture, mesh_map = generator(torch.randn(2, 8), torch.tensor([0, 3]))
    assert texture.shape == (2, 3, 128, 128) and mesh_map.shape == (2, 3, 32, 32)
    checkpoint = torch.load(tmp_path / LATEST, map_location="cpu", weights_only=True)
    assert checkpoint["iteration"] == 6 and checkpoint["config"]["pretrain"]["batch_size"] == 4
    # Both record the template they were trained with, for load_generator to check.
    assert checkpoint["template"] == TemplateConfig().identity()
    assert torch.load(tmp_path / "generator_ema.pt", weights_only=True)["template"] == TemplateConfig().identity()

    # scripts/sample.py exports meshes and a view grid from it.
    result = subprocess.run([sys.executable, "scripts/sample.py", "--config", "configs/synthetic.yaml",
                             "--checkpoint", str(tmp_path / "generator_ema.pt"), "--out", str(tmp_path / "samples_out"),
                             "--set", "sample.count=2", "--set", "sample.image_size=32", "--set", "device=cpu",
                             "--set", "model.latent_dim=8"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for name in ("samples.png", "sample_000/mesh.obj", "sample_001/mesh.png", "summary.json"):
        assert (tmp_path / "samples_out" / name).is_file(), name
    assert json.loads((tmp_path / "samples_out" / "summary.json").read_text())["classes"] == [0, 1]


def test_generator_samples_are_reproducible_and_cycle_the_classes():
    """One draw for pretraining's grids and Frechet distances and for scripts/sample.py."""
    torch.manual_seed(0)
    generator = ConvMeshGenerator(**ModelConfig(**TINY_MODEL).generator_kwargs()).eval()
    textures, maps, classes = draw_samples(generator, 5, 1.0, seed=3, classes=[2, 6])
    assert classes.tolist() == [2, 6, 2, 6, 2] and textures.shape[0] == maps.shape[0] == 5
    again, maps_again, _ = draw_samples(generator, 5, 1.0, seed=3, classes=[2, 6], batch_size=2)
    torch.testing.assert_close(again, textures)
    torch.testing.assert_close(maps_again, maps)
    assert draw_samples(generator, 3, 1.0)[2].tolist() == [0, 1, 2]  # no classes given: all, in turn
    assert not torch.equal(draw_samples(generator, 5, 1.0, seed=4, classes=[2, 6])[0], textures)


def test_resuming_gives_the_same_weights_as_an_uninterrupted_run(pseudogt, tmp_path):
    model = ModelConfig(**TINY_MODEL)
    pretrain(model, train_config(pseudogt, tmp_path / "straight"), TemplateConfig(), torch.device("cpu"))
    pretrain(model, train_config(pseudogt, tmp_path / "split", max_steps=3), TemplateConfig(), torch.device("cpu"))
    pretrain(model, train_config(pseudogt, tmp_path / "split"), TemplateConfig(), torch.device("cpu"), resume=True)
    a = torch.load(tmp_path / "straight" / LATEST, weights_only=True)
    b = torch.load(tmp_path / "split" / LATEST, weights_only=True)
    # Same process, same inputs, the restored random streams: equal bit for bit.
    assert a["iteration"] == b["iteration"] == 6
    for key in ("generator", "generator_ema", "uv_discriminator", "patch_discriminator"):
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), (key, name)


def _script_args(pseudogt, out_dir, *extra, device="cpu"):
    args = ["--config", "configs/synthetic.yaml", "--set", f"pretrain.data={pseudogt / 'pseudogt_128x128'}",
            "--set", f"pretrain.out_dir={out_dir}", "--set", "pretrain.gt_dir=null", "--set", "pretrain.batch_size=4",
            "--set", "pretrain.render_size=32", "--set", "pretrain.sample_every=1000", "--set", f"device={device}"]
    for key, value in TINY_MODEL.items():
        args += ["--set", f"model.{key}={value}"]
    return args + list(extra)


def test_sigkilled_run_resumes_from_its_latest_checkpoint(pseudogt, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "scripts/pretrain.py",
               *_script_args(pseudogt, out, "--set", "pretrain.checkpoint_every=2", "--set", "pretrain.max_steps=1000")]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not (out / LATEST).is_file() and time.time() < deadline and process.poll() is None:
            time.sleep(0.2)
        assert (out / LATEST).is_file(), "no checkpoint before the deadline"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    done = torch.load(out / LATEST, weights_only=True)["iteration"]
    assert done >= 2
    result = subprocess.run([sys.executable, "scripts/pretrain.py",
                             *_script_args(pseudogt, out, "--set", f"pretrain.max_steps={done + 2}", "--resume")],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"resumed from {out / LATEST} at iteration {done}" in result.stderr
    assert torch.load(out / LATEST, weights_only=True)["iteration"] == done + 2


def _run_script(*args):
    return subprocess.run([sys.executable, "scripts/pretrain.py", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)


def test_a_run_folder_is_not_overwritten_nor_resumed_with_other_settings(pseudogt, tmp_path):
    out = tmp_path / "run"
    result = _run_script(*_script_args(pseudogt, out, "--set", "pretrain.max_steps=2"))
    assert result.returncode == 0, result.stderr
    before = (out / LATEST).read_bytes(), (out / "config.yaml").read_text()

    # Starting again without --resume would overwrite checkpoint-latest.pt: refused, nothing written.
    result = _run_script(*_script_args(pseudogt, out, "--set", "pretrain.max_steps=1"))
    assert result.returncode == 1
    assert f"{out} already holds a run" in result.stderr
    assert "--resume" in result.stderr and "new out_dir" in result.stderr and "--force" in result.stderr
    # Resuming with another batch size and learning rate: refused, naming them.
    result = _run_script(*_script_args(pseudogt, out, "--set", "pretrain.batch_size=2", "--set", "pretrain.lr_g=0.01",
                                       "--resume"))
    assert result.returncode == 1
    assert "other settings (pretrain.batch_size, pretrain.lr_g;" in result.stderr
    assert ((out / LATEST).read_bytes(), (out / "config.yaml").read_text()) == before

    # --force starts over (iteration 1 of the new run, not 2 of the old one).
    result = _run_script(*_script_args(pseudogt, out, "--set", "pretrain.max_steps=1", "--force"))
    assert result.returncode == 0, result.stderr
    assert torch.load(out / LATEST, weights_only=True)["iteration"] == 1

    # A damaged checkpoint is named, without a traceback.
    data = (out / LATEST).read_bytes()
    (out / LATEST).write_bytes(data[:len(data) // 2])
    result = _run_script(*_script_args(pseudogt, out, "--set", "pretrain.max_steps=2", "--resume"))
    assert result.returncode == 1 and f"{out / LATEST} is damaged" in result.stderr
    assert "Traceback" not in result.stderr


def test_prepare_run_folder(tmp_path):
    out = tmp_path / "run"

    def config(*overrides):
        return load_config(ExperimentConfig, None, [f"pretrain.out_dir={out}", *overrides])

    sections = ("model", "pretrain", "template")
    prepare_run_folder(out, config(), sections, resume=False)  # a new folder: recorded
    assert saved_run_config(out)["pretrain"]["batch_size"] == 32
    prepare_run_folder(out, config("pretrain.batch_size=4"), sections, resume=False)  # no checkpoint yet: nothing lost
    (out / LATEST).write_bytes(b"state")
    with pytest.raises(RunFolderError, match="already holds a run"):
        prepare_run_folder(out, config("pretrain.batch_size=4"), sections, resume=False)
    with pytest.raises(RunFolderError, match="give one of them"):
        prepare_run_folder(out, config("pretrain.batch_size=4"), sections, resume=True, force=True)
    # How long it runs and what it logs may change on resume; the model, data order, optimiser may not.
    prepare_run_folder(out, config("pretrain.batch_size=4", "pretrain.max_steps=50", "pretrain.log_every=3",
                                   "pretrain.gt_dir=x", "sample.count=3", "device=cpu"), sections, resume=True)
    assert saved_run_config(out)["pretrain"]["max_steps"] == 50
    for override, key in (("model.latent_dim=16", "model.latent_dim"), ("pretrain.seed=1", "pretrain.seed"),
                          ("template.rings=8", "template.rings"), ("pretrain.betas=[0.5, 0.9]", "pretrain.betas")):
        with pytest.raises(RunFolderError, match=rf"other settings \({key};"):
            prepare_run_folder(out, config("pretrain.batch_size=4", override), sections, resume=True)
    # Checked by every process, written by the main one only.
    prepare_run_folder(out, config("pretrain.batch_size=4", "pretrain.max_steps=60"), sections, resume=True,
                       write=False)
    assert saved_run_config(out)["pretrain"]["max_steps"] == 50
    # --force deletes the old state, so that a later --resume cannot continue it under the new settings.
    prepare_run_folder(out, config("pretrain.batch_size=8"), sections, resume=False, force=True)
    assert not (out / LATEST).exists() and saved_run_config(out)["pretrain"]["batch_size"] == 8


@pytest.mark.parametrize("script,override,message", [
    ("pretrain.py", "pretrain.batch_size=0", "pretrain.batch_size must be >= 1, got 0"),
    ("train_camera.py", "camera.rotation_loss=l1", "camera.rotation_loss must be one of 'quaternion', 'matrix'"),
])
def test_bad_settings_are_refused_by_dry_run_and_run_alike(tmp_path, script, override, message):
    results = [subprocess.run([sys.executable, f"scripts/{script}", "--config", "configs/synthetic.yaml",
                               "--set", f"pretrain.out_dir={tmp_path}", "--set", f"camera.out_dir={tmp_path}",
                               "--set", override, *extra], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
               for extra in (["--dry-run"], [])]
    for result in results:
        assert result.returncode == 2 and message in result.stderr, result.stderr
    assert results[0].stderr.splitlines()[-1] == results[1].stderr.splitlines()[-1]
    assert list(tmp_path.iterdir()) == []  # refused before any work


def test_two_gloo_processes_keep_identical_replicas(pseudogt, tmp_path):
    out = tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517"]
    result = subprocess.run([*torchrun, "scripts/pretrain.py", *_script_args(pseudogt, out, "--set", "pretrain.max_steps=3")],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=400,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 3 and summary["replicas_identical"] is True


def test_frechet_distance_is_the_gaussian_formula():
    assert frechet_distance(np.array([0.0]), np.array([[4.0]]), np.array([3.0]), np.array([[1.0]])) == pytest.approx(9 + 1)
    g = torch.Generator().manual_seed(0)
    reference = torch.randn(500, 3, 4, 4, generator=g)
    metric = PCAFrechet(reference, components=8)
    assert metric(reference) == pytest.approx(0.0, abs=1e-6)
    assert metric(reference + 1.0) > metric(reference + 0.1) > 0.01


def test_masked_gan_losses_and_lr_schedule():
    scores = torch.tensor([[[[2.0, -2.0]]], [[[0.5, 0.0]]]])
    mask = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 1.0]]]])
    assert masked_mean(scores, mask) == pytest.approx((2.0 + 0.25) / 2)
    assert hinge_discriminator(scores, True, mask) == pytest.approx((0.0 + 0.75) / 2)
    assert hinge_discriminator(scores, False, mask) == pytest.approx((3.0 + 1.25) / 2)
    assert hinge_generator(scores, mask) == pytest.approx(-(2.0 + 0.25) / 2)
    cfg = PretrainConfig(epochs=10, lr_decay_after=5)
    assert _lr_factor(2, cfg) == 1.0 and _lr_factor(7.5, cfg) == pytest.approx(0.5) and _lr_factor(10, cfg) == 0.0
