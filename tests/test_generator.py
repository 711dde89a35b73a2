"""The ConvMesh generator (docs/method.md section 3): parameter names/shapes of the released CUB model, outputs
against the original's on seeded weights, symmetry and poles, truncation, EMA and checkpoints."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import reference_files
from meshinv.geometry import TemplateConfig, build_template, read_obj
from meshinv.models import (
    CheckpointError, ConvMeshGenerator, ema_alpha, generator_config_from_state_dict, load_generator,
    save_generator_checkpoint, truncated_normal, update_ema,
)
from meshinv.utils.weights import MissingWeightsError

GENERATOR_FIXTURES = reference_files("generator_tex128_seed*.npz")
generator_fixture_params = pytest.mark.parametrize(
    "fixture_path",
    [pytest.param(p, id=p.stem) for p in GENERATOR_FIXTURES]
    or [pytest.param(None, marks=pytest.mark.skip(
        reason="no generator_tex128_seed*.npz fixture (set MESHINV_REFERENCE_DIR)"))],
)

# Small enough for fast tests: 8 x 8 mesh map, 64 x 64 texture (one blk3 stage).
TINY = dict(latent_dim=16, n_classes=3, texture_resolution=64, mesh_resolution=8)


def tiny_generator(seed: int = 0, **kwargs) -> ConvMeshGenerator:
    torch.manual_seed(seed)
    return ConvMeshGenerator(**{**TINY, **kwargs})


def randomise(module: torch.nn.Module, seed: int) -> None:
    """Give every float parameter and buffer random values (so that nothing is trivially zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith(("weight_u", "weight_v")):
                t.copy_(F.normalize(torch.randn(t.shape, generator=g), dim=0))
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.05)


# -- architecture -------------------------------------------------------------------------------------

def test_state_dict_matches_released_cub_generator(reference_path):
    expected = json.loads(reference_path("generator_cub512_state_dict_shapes.json").read_text())
    generator = ConvMeshGenerator(latent_dim=64, n_classes=200, texture_resolution=512)
    shapes = {k: list(v.shape) for k, v in generator.state_dict().items()}
    assert sorted(shapes) == sorted(expected)
    assert shapes == expected
    assert list(shapes) == list(expected)  # same order too (only cosmetic)


def test_config_inferred_from_released_shapes(reference_path):
    expected = json.loads(reference_path("generator_cub512_state_dict_shapes.json").read_text())
    state_dict = {k: torch.empty(shape, device="meta") for k, shape in expected.items()}
    assert generator_config_from_state_dict(state_dict) == dict(
        latent_dim=64, n_classes=200, texture_resolution=512, mesh_resolution=32, symmetric=True, norm="batch")


def seeded_state_dict(generator: ConvMeshGenerator, seed: int) -> dict[str, torch.Tensor]:
    """Weights as reference/README.md builds them: sorted keys, one generator, per-key rules."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in sorted(generator.state_dict().items()):
        if key.endswith("num_batches_tracked"):
            out[key] = torch.zeros_like(value)
        elif key.endswith("running_var"):
            out[key] = torch.rand(value.shape, generator=g) + 0.5
        elif key.endswith("running_mean"):
            out[key] = torch.randn(value.shape, generator=g) * 0.1
        elif key.endswith(("weight_u", "weight_v")):
            out[key] = F.normalize(torch.randn(value.shape, generator=g), dim=0)
        else:
            out[key] = torch.randn(value.shape, generator=g) * 0.05
    return out


@pytest.fixture(scope="module")
def fixture_outputs():
    """{path: (fixture arrays, our texture, our mesh_map)}, computed once per fixture file."""
    cache = {}

    def get(path):
        if path not in cache:
            data = dict(np.load(path))
            seed = int(data["seed"])
            generator = ConvMeshGenerator(latent_dim=data["z"].shape[1], n_classes=int(data["n_classes"]),
                                          texture_resolution=int(data["texture_resolution"]))
            state_dict = seeded_state_dict(generator, seed)
            for name, array in data.items():
                if name.startswith("buffers/"):
                    state_dict[name[len("buffers/"):]] = torch.from_numpy(array)
            generator.load_state_dict(state_dict)
            generator.eval()
            with torch.no_grad():
                texture, mesh_map = generator(torch.from_numpy(data["z"]), torch.from_numpy(data["c"])[:, 0])
            cache[path] = (data, texture, mesh_map)
        return cache[path]

    return get


@generator_fixture_params
def test_outputs_match_original(fixture_path, fixture_outputs):
    data, texture, mesh_map = fixture_outputs(fixture_path)
    assert texture.shape == data["texture"].shape and mesh_map.shape == data["mesh_map"].shape
    assert (texture - torch.from_numpy(data["texture"])).abs().max() < 1e-4
    assert (mesh_map - torch.from_numpy(data["mesh_map"])).abs().max() < 1e-4
    assert torch.from_numpy(data["mesh_map"]).abs().max() > 1.0  # the comparison is not vacuous


@generator_fixture_params
def test_deformed_template_matches_original(fixture_path, fixture_outputs, reference_path):
    # The deformation is checked on the original's own mesh map: ours matches it only to 1e-4 (float
    # rounding in the conv stack varies with the CPU's kernels), which the offsets would carry over.
    data, _, _ = fixture_outputs(fixture_path)
    mesh_map = torch.from_numpy(data["mesh_map"])
    expected = torch.from_numpy(data["vertices"])
    # The original's template OBJ: same vertex order, so a direct comparison.
    ref_mesh = read_obj(reference_path("uvsphere_16rings.obj"))
    template = build_template(TemplateConfig(obj_path=str(reference_path("uvsphere_16rings.obj"))))
    assert (template.vertex_positions(mesh_map) - expected).abs().max() < 1e-5
    # Our generated sphere: vertices matched by position. Its exact positions differ from the OBJ's
    # float32-rounded ones by ~1.4e-6, amplified by offsets up to ~7 (see test_template.py): 2e-5.
    sphere = build_template(TemplateConfig())
    dist = np.linalg.norm(ref_mesh.vertices[:, None] - sphere.vertices.double().numpy()[None], axis=-1)
    perm = dist.argmin(axis=1)
    assert len(np.unique(perm)) == len(perm) and dist.min(axis=1).max() < 1e-5
    assert (sphere.vertex_positions(mesh_map)[:, perm] - expected).abs().max() < 2e-5


# -- behaviour ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("symmetric", [True, False])
def test_shapes_symmetry_and_poles(symmetric):
    generator = tiny_generator(symmetric=symmetric)
    randomise(generator, 1)  # non-zero mesh head
    generator.eval()
    z = torch.randn(2, TINY["latent_dim"])
    texture, mesh_map = generator(z, torch.tensor([0, 2]))
    assert texture.shape == (2, 3, 64, 64) and mesh_map.shape == (2, 3, 8, 8)
    assert texture.abs().max() <= 1.0
    assert mesh_map.abs().max() > 0
    # Pole rows are constant along u.
    for row in (0, -1):
        assert torch.allclose(mesh_map[:, :, row], mesh_map[:, :, row, :1].expand_as(mesh_map[:, :, row]))
    for uv_map in (texture, mesh_map):
        width = uv_map.shape[-1]
        mirror = (width // 2 - 1 - torch.arange(width)) % width  # mirror about u = 1/4 (and 3/4)
        assert torch.equal(uv_map, uv_map[..., mirror]) == symmetric


def test_untrained_mesh_head_outputs_zero_deformation():
    generator = tiny_generator()
    _, mesh_map = generator(torch.randn(3, TINY["latent_dim"]), torch.tensor([0, 1, 2]))
    assert torch.count_nonzero(mesh_map) == 0


def test_forward_backward_reaches_every_parameter():
    generator = tiny_generator()
    randomise(generator, 2)
    generator.train()
    z = torch.randn(4, TINY["latent_dim"], requires_grad=True)
    texture, mesh_map = generator(z, torch.tensor([0, 1, 2, 0]))
    (texture.square().mean() + mesh_map.square().mean()).backward()
    for name, p in generator.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert z.grad.abs().sum() > 0


def test_input_checks():
    generator = tiny_generator()
    z = torch.randn(2, TINY["latent_dim"])
    with pytest.raises(ValueError, match="class_id"):
        generator(z)
    with pytest.raises(ValueError, match="class_id"):
        generator(z, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="z must be"):
        generator(torch.randn(2, 5), torch.tensor([0, 1]))
    unconditional = tiny_generator(n_classes=0)
    assert "emb_class.weight" not in unconditional.state_dict()
    assert unconditional(z)[0].shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="unconditional"):
        unconditional(z, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="texture_resolution"):
        ConvMeshGenerator(texture_resolution=100)
    with pytest.raises(ValueError, match="norm"):
        ConvMeshGenerator(**TINY, norm="group")


# -- truncation and EMA -------------------------------------------------------------------------------

def test_truncated_normal():
    z = truncated_normal((64, 64), 0.25, generator=torch.Generator().manual_seed(3))
    assert z.shape == (64, 64) and z.abs().max() <= 0.25
    assert z.std() > 0.1  # spread over the interval, not collapsed
    again = truncated_normal((64, 64), 0.25, generator=torch.Generator().manual_seed(3))
    assert torch.equal(z, again)
    # A sigma nothing exceeds leaves plain N(0, 1) draws.
    plain = torch.randn(10, 4, generator=torch.Generator().manual_seed(5))
    assert torch.equal(truncated_normal((10, 4), 1e3, generator=torch.Generator().manual_seed(5)), plain)
    with pytest.raises(ValueError):
        truncated_normal((2,), 0.0)


def test_update_ema_averages_parameters_and_copies_buffers():
    source, ema = tiny_generator(0), tiny_generator(1)
    randomise(source, 3)
    randomise(ema, 4)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    update_ema(ema, source, alpha=0.9)
    params = dict(source.named_parameters())
    for name, p in ema.named_parameters():
        assert torch.allclose(p, 0.9 * before[name] + 0.1 * params[name], atol=1e-7), name
    buffers = dict(source.named_buffers())
    for name, b in ema.named_buffers():
        assert torch.equal(b, buffers[name]), name
    update_ema(ema, source, alpha=0.0)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in ema.state_dict().items())
    with pytest.raises(ValueError, match="differ"):
        update_ema(tiny_generator(n_classes=0), source)
    assert ema_alpha(0) == pytest.approx(0.999**100) and ema_alpha(50) == pytest.approx(0.999**10)
    assert ema_alpha(100) == 0.999


# -- checkpoints --------------------------------------------------------------------------------------

def _outputs(generator, seed=0):
    z = torch.randn(2, generator.latent_dim, generator=torch.Generator().manual_seed(seed))
    c = torch.tensor([0, 1]) if generator.n_classes else None
    with torch.no_grad():
        return generator.eval()(z, c)


def test_own_checkpoint_round_trip(tmp_path):
    generator, ema = tiny_generator(0, symmetric=False), tiny_generator(1, symmetric=False)
    randomise(generator, 5)
    randomise(ema, 6)
    path = tmp_path / "run" / "checkpoint_latest.pth"
    save_generator_checkpoint(path, generator, {"epoch": 7, "optimizer_g": {"lr": 1e-4}}, generator_ema=ema)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind

    loaded = load_generator(path, device="cpu")
    assert not loaded.training and loaded.config == ema.config
    for a, b in zip(_outputs(loaded), _outputs(ema)):
        assert torch.equal(a, b)
    raw = load_generator(str(path), which="raw")
    for a, b in zip(_outputs(raw), _outputs(generator)):
        assert torch.equal(a, b)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == 7 and checkpoint["model_config"]["symmetric"] is False
    with pytest.raises(ValueError, match="reserved"):
        save_generator_checkpoint(path, generator, {"generator": 1})


@pytest.mark.parametrize("layout", ["meshinversion", "convmesh", "dataparallel", "bare"])
def test_original_checkpoints_load(tmp_path, layout):
    ema, generator = tiny_generator(1), tiny_generator(2)
    randomise(ema, 7)
    randomise(generator, 8)
    ema_sd, raw_sd = ema.state_dict(), generator.state_dict()
    if layout == "meshinversion":
        checkpoint = {"generator": raw_sd, "generator_running_avg": ema_sd, "epoch": 600,
                      "self.args": {"texture_resolution": 64, "name": "x"}, "g_curve": [0.1, 0.2]}
    elif layout == "convmesh":
        checkpoint = {"generator": raw_sd, "generator_running_avg": ema_sd, "args": {"dataset": "cub"}}
    elif layout == "dataparallel":
        checkpoint = {"generator_running_avg": {f"module.{k}": v for k, v in ema_sd.items()}}
    else:
        checkpoint = ema_sd
    path = tmp_path / "checkpoint.pth"
    torch.save(checkpoint, path)
    loaded = load_generator(path)
    assert loaded.config == ema.config
    for a, b in zip(_outputs(loaded), _outputs(ema)):
        assert torch.equal(a, b)
    assert load_generator(checkpoint).config == ema.config  # an in-memory dict works too


def test_inferred_configs():
    for kwargs in (dict(), dict(n_classes=0), dict(symmetric=False), dict(texture_resolution=32),
                   dict(texture_resolution=256), dict(mesh_resolution=16, texture_resolution=64)):
        generator = ConvMeshGenerator(**{**TINY, **kwargs})
        meta = {k: torch.empty(v.shape, device="meta") for k, v in generator.state_dict().items()}
        assert generator_config_from_state_dict(meta) == generator.config, kwargs


def test_mismatch_errors_list_offending_keys():
    generator = tiny_generator()
    state_dict = dict(generator.state_dict())
    del state_dict["blk2.norm1.fc_beta.bias"]
    state_dict["blk9.conv1.weight"] = torch.zeros(1)
    state_dict["blk1.norm2.fc_gamma.weight"] = torch.zeros(3, 3)
    checkpoint = {"format": "meshinv.generator", "format_version": 1, "model_config": generator.config,
                  "generator": state_dict}
    with pytest.raises(CheckpointError) as info:
        load_generator(checkpoint)
    message = str(info.value)
    for key in ("blk2.norm1.fc_beta.bias", "blk9.conv1.weight", "blk1.norm2.fc_gamma.weight", "(3, 3)"):
        assert key in message
    # Weights of a 64 texture (with blk3a) into a 32-texture generator (without): blk3a is unexpected.
    with pytest.raises(CheckpointError, match="unexpected keys"):
        load_generator(generator.state_dict(), texture_resolution=32)


def test_checkpoint_errors(tmp_path, monkeypatch):
    generator = tiny_generator(norm="instance")
    state_dict = generator.state_dict()
    with pytest.raises(CheckpointError, match="norm"):
        load_generator(state_dict)
    assert load_generator(state_dict, norm="instance").config == generator.config
    with pytest.raises(CheckpointError, match="colour"):
        load_generator({**tiny_generator().state_dict(), "emb_color.weight": torch.zeros(4, 8)})
    with pytest.raises(CheckpointError, match="none of the generator keys"):
        load_generator({"discriminator": state_dict, "epoch": 3})
    torch.save({"generator": state_dict, "args": argparse.Namespace(name="x")}, tmp_path / "pickled.pth")
    with pytest.raises(CheckpointError, match="weights-only"):
        load_generator(tmp_path / "pickled.pth")
    monkeypatch.setenv("MESHINV_PRETRAINED_DIR", str(tmp_path))
    with pytest.raises(MissingWeightsError):
        load_generator("no_such_checkpoint_7f3a.pth")
    torch.save({"generator_running_avg": state_dict}, tmp_path / "found.pth")
    assert load_generator("found.pth", norm="instance").config == generator.config
