"""Checkpoint files: one reader whose errors name the file and say what is wrong with it, used by
every loader (generator, camera predictor, both trainers' resume), and one writer."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import pytest
import torch

from meshinv.models.camera import load_camera_predictor
from meshinv.models.checkpoints import CheckpointError, load_generator, read_checkpoint, save_generator_checkpoint
from meshinv.models.generator import ConvMeshGenerator
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
