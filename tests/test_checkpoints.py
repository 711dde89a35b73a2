"""Checkpoint files: one reader whose errors name the file and say what is wrong with it, used by
every loader (generator, camera predictor, both trainers' resume), and one writer."""

from __future__ import annotations

import logging
import pickle
import random
from pathlib import Path

import pytest
import torch

from meshinv.geometry.obj_io import write_obj
from meshinv.geometry.template import TemplateConfig
from meshinv.models.camera import load_camera_predictor
from meshinv.models.checkpoints import CheckpointError, load_generator, read_checkpoint, save_generator_checkpoint
from meshinv.models.generator import ConvMeshGenerator
from meshinv.training.config import ModelConfig
from meshinv.training.runs import read_training_checkpoint


class Payload:
    """Stands for any class a pickle may name (and run code from when unpickled)."""


def _random_bytes(count: int) -> bytes:
    data = bytearray(random.Random(0).getrandbits(8) for _ in range(count))
    data[0] = 0x42  # neither the zip nor the pickle signature, whatever the seed gives
    return bytes(data)


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "generator.pt"
    generator = ConvMeshGenerator(latent_dim=8, texture_resolution=64, mesh_resolution=16, width_multiplier=0.0625)
    save_generator_checkpoint(path, generator, {"iteration": 3})
    return path


def _damaged(kind: str, real: Path, folder: Path) -> Path:
    path = folder / f"{kind}.pt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = real.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif kind == "random_bytes":
        path.write_bytes(_random_bytes(4096))
    elif kind == "torch_save_of_objects":
        torch.save({"weights": torch.zeros(2), "extra": Payload()}, path)
    elif kind == "plain_pickle_of_objects":
        path.write_bytes(pickle.dumps({"extra": Payload()}, protocol=4))
    return path


# What each message must say (and, for random bytes, must not: it holds no objects).
EXPECTED = {"empty": "is empty", "truncated": "is damaged: truncated", "random_bytes": "is not a PyTorch checkpoint",
            "torch_save_of_objects": "holds Python objects that weights-only loading refuses",
            "plain_pickle_of_objects": "holds Python objects that weights-only loading refuses"}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
@pytest.mark.parametrize("loader", [read_checkpoint, load_generator, load_camera_predictor,
                                    lambda p: read_training_checkpoint(p, ["iteration"], "pretraining")],
                         ids=["read_checkpoint", "load_generator", "load_camera_predictor", "trainer_resume"])
def test_an_unreadable_file_is_a_clear_error_naming_it(real_checkpoint, tmp_path, kind, loader):
    path = _damaged(kind, real_checkpoint, tmp_path)
    with pytest.raises(CheckpointError) as info:
        loader(path)
    message = str(info.value)
    assert str(path) in message and EXPECTED[kind] in message
    if kind in ("empty", "truncated", "random_bytes"):
        assert "objects" not in message
    if kind.endswith("objects"):
        assert "Payload" in message  # the class it names


def test_the_real_checkpoint_reads_back(real_checkpoint):
    checkpoint = read_checkpoint(real_checkpoint)
    assert checkpoint["format"] == "meshinv.generator" and checkpoint["iteration"] == 3
    assert load_generator(real_checkpoint).config["latent_dim"] == 8
    with pytest.raises(CheckpointError, match=r"generator.pt is not a pretraining checkpoint \(no optimizer_g\)"):
        read_training_checkpoint(real_checkpoint, ["iteration", "optimizer_g"], "pretraining")
    with pytest.raises(CheckpointError, match="not a camera predictor checkpoint"):
        load_camera_predictor(real_checkpoint)
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        read_checkpoint(real_checkpoint.parent / "absent.pt")


# -- self-describing generator checkpoints: the template and model they need --------------------------

TINY = dict(latent_dim=8, n_classes=8, texture_resolution=64, mesh_resolution=16)


def _tiny_generator() -> ConvMeshGenerator:
    torch.manual_seed(0)
    return ConvMeshGenerator(**TINY, width_multiplier=0.0625)


def test_a_generator_checkpoint_refuses_another_template_or_model(tmp_path):
    path = tmp_path / "prior.pt"
    save_generator_checkpoint(path, _tiny_generator(), template=TemplateConfig(rings=16))
    assert read_checkpoint(path)["template"] == {"rings": 16, "segments": 32, "symmetric": True}
    loaded = load_generator(path, template=TemplateConfig(rings=16), model=ModelConfig(**TINY))
    assert loaded.config == _tiny_generator().config
    with pytest.raises(CheckpointError) as info:
        load_generator(path, template=TemplateConfig(rings=31), model=ModelConfig(**TINY))
    message = str(info.value)
    assert str(path) in message and "template.rings is 16 in the checkpoint but 31 in the config" in message
    with pytest.raises(CheckpointError) as info:
        load_generator(path, template=TemplateConfig(symmetric=False), model=ModelConfig(**{**TINY, "latent_dim": 64}))
    for piece in ("model.latent_dim is 8 in the checkpoint but 64 in the config",
                  "template.symmetric is True in the checkpoint but False in the config"):
        assert piece in str(info.value)


def test_an_obj_template_is_recognised_by_its_content(tmp_path):
    from meshinv.geometry.template import MeshTemplate

    original, moved, edited = tmp_path / "a" / "t.obj", tmp_path / "b" / "t.obj", tmp_path / "c" / "t.obj"
    for path in (original, moved, edited):
        path.parent.mkdir()
        write_obj(path, MeshTemplate.uv_sphere(8).mesh_data(MeshTemplate.uv_sphere(8).vertices))
    edited.write_text(edited.read_text() + "# edited\n")
    checkpoint = tmp_path / "prior.pt"
    save_generator_checkpoint(checkpoint, _tiny_generator(), template=TemplateConfig(obj_path=str(original)))
    load_generator(checkpoint, template=TemplateConfig(obj_path=str(moved)))  # the same file elsewhere
    with pytest.raises(CheckpointError, match="template.obj_sha256 is '[0-9a-f]{64}' in the checkpoint but"):
        load_generator(checkpoint, template=TemplateConfig(obj_path=str(edited)))
    with pytest.raises(CheckpointError, match="template.rings is None in the checkpoint but 16 in the config"):
        load_generator(checkpoint, template=TemplateConfig())


def test_checkpoints_without_the_record_load_with_a_note(tmp_path, caplog):
    old = tmp_path / "old.pt"
    save_generator_checkpoint(old, _tiny_generator())  # the format before the template was recorded
    # A released file: a bare state_dict, full width (its architecture is inferred from the weights).
    full_width = {**TINY, "mesh_resolution": 8}
    released = ConvMeshGenerator(**full_width)
    for source, model, generator in ((old, TINY, _tiny_generator()), (released.state_dict(), full_width, released)):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="meshinv.models.checkpoints"):
            loaded = load_generator(source, template=TemplateConfig(rings=31), model=ModelConfig(**model))
        assert loaded.config == generator.config
        assert "records no template" in caplog.text and "not checked" in caplog.text
    with pytest.raises(CheckpointError, match="model.n_classes is 8 in the checkpoint but 0 in the config"):
        load_generator(released.state_dict(), model=ModelConfig(**{**full_width, "n_classes": 0}))


def test_the_pretraining_config_stored_in_older_files_is_checked():
    """Files written before the record keep the template scripts/pretrain.py stored in `config`;
    the shipped prior is one, and it fits configs/synthetic.yaml."""
    from conftest import REPO_ROOT
    from meshinv.config import ExperimentConfig
    from meshinv.utils.config import load_config

    shipped = REPO_ROOT / "pretrained" / "synthetic_prior_ours.pt"
    assert "template" not in read_checkpoint(shipped)
    cfg = load_config(ExperimentConfig, REPO_ROOT / "configs" / "synthetic.yaml")
    load_generator(shipped, template=cfg.template, model=cfg.model)
    with pytest.raises(CheckpointError, match="synthetic_prior_ours.pt does not fit this experiment: template.rings "
                                              "is 16 in the checkpoint but 31 in the config"):
        load_generator(shipped, template=TemplateConfig(rings=31), model=cfg.model)


def test_a_camera_predictor_is_built_from_its_record(tmp_path):
    """The camera-predictor checkpoint records its architecture (image size, rotation head, masked
    input); loading builds exactly that, and a record that does not fit the weights is refused."""
    from meshinv.models.camera import CameraPredictor, save_camera_predictor
    from meshinv.utils.io import save_torch

    torch.manual_seed(0)
    model = CameraPredictor(image_size=64, rotation_head="6d", masked_input=True).eval()
    save_camera_predictor(tmp_path / "camera.pt", model)
    loaded = load_camera_predictor(tmp_path / "camera.pt")
    assert loaded.config == model.config and loaded.masked_input and loaded.rotation_head == "6d"
    with pytest.raises(ValueError, match="masked_input"):
        loaded(torch.zeros(1, 3, 64, 64))
    for key, value, piece in (("rotation_head", "quaternion", "quaternion_head"), ("image_size", 128, "head_fc")):
        checkpoint = read_checkpoint(tmp_path / "camera.pt")
        checkpoint["model_config"][key] = value
        save_torch(tmp_path / f"{key}.pt", checkpoint)
        with pytest.raises(CheckpointError) as info:
            load_camera_predictor(tmp_path / f"{key}.pt")
        assert f"{key}.pt" in str(info.value) and piece in str(info.value)
