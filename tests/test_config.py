"""Typed YAML configs, atomic writes and the pretrained-weight search path."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest
import yaml

from conftest import REPO_ROOT
from meshinv.utils.config import (
    ConfigError, SettingError, at_least, changed_settings, dump_config, load_config, parse_cli, run_only_settings,
    save_config, saved_run_config, to_dict, validate_config,
)
from meshinv.utils.io import atomic_write, save_text
from meshinv.utils.weights import MissingWeightsError, find_weights, weight_search_dirs


@dataclass
class Inner:
    depth: int = 2
    lr: float = 1e-3
    mode: Literal["fast", "slow"] = "fast"


@dataclass
class Outer:
    b: int = 1
    inner: Inner = field(default_factory=Inner)


@dataclass
class Config:
    name: str = "run"
    a: Outer = field(default_factory=Outer)
    views: list[int] = field(default_factory=lambda: [0, 90])
    size: tuple[int, int] = (256, 256)
    out: Optional[str] = "out"
    limit: int | None = None
    verbose: bool = False
    weight: float = 1.0


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_without_file():
    cfg = load_config(Config)
    assert cfg == Config()


def test_yaml_file_and_defaults(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {"name": "bird", "a": {"inner": {"depth": 5}}, "views": [0, 30, 60]})
    cfg = load_config(Config, path)
    assert cfg.name == "bird"
    assert cfg.a.inner.depth == 5
    assert cfg.a.inner.lr == 1e-3 and cfg.a.inner.mode == "fast" and cfg.a.b == 1  # kept defaults
    assert cfg.views == [0, 30, 60]
    assert cfg.size == (256, 256) and cfg.out == "out"
    assert isinstance(cfg.a, Outer) and isinstance(cfg.a.inner, Inner)


def test_empty_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(Config, path) == Config()


def test_overrides(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {"a": {"b": 2}})
    cfg = load_config(Config, path, ["a.b=3", "a.inner.lr=1e-4", "views=[1, 2]", "out=null", "limit=7",
                                     "a.inner.mode=slow", "size=[64, 32]", "verbose=true"])
    assert cfg.a.b == 3  # override beats the file
    assert cfg.a.inner.lr == pytest.approx(1e-4)
    assert cfg.views == [1, 2]
    assert cfg.out is None
    assert cfg.limit == 7
    assert cfg.a.inner.mode == "slow"
    assert cfg.size == (64, 32)
    assert cfg.verbose is True
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Config, None, ["a.b"])


def test_exponent_floats_without_dot(tmp_path):
    # YAML 1.1 (PyYAML's default) reads `1e-4` as a string; configs must read it as a number.
    path = tmp_path / "c.yaml"
    path.write_text("weight: 1e-4\na:\n  inner:\n    lr: 2.5e3\n")
    cfg = load_config(Config, path, ["a.inner.lr=1E-5"])
    assert cfg.weight == pytest.approx(1e-4) and cfg.a.inner.lr == pytest.approx(1e-5)
    assert load_config(Config, path).a.inner.lr == 2500.0
    assert load_config(Config, None, ["name='1e-4'"]).name == "1e-4"  # quoted stays a string
    assert yaml.safe_load("1e-4") == "1e-4"  # the global PyYAML loader is left alone


def test_none_for_optional(tmp_path):
    cfg = load_config(Config, write_yaml(tmp_path / "c.yaml", {"out": None, "limit": None}))
    assert cfg.out is None and cfg.limit is None
    with pytest.raises(ConfigError, match="name"):
        load_config(Config, write_yaml(tmp_path / "d.yaml", {"name": None}))


def test_int_promoted_to_float(tmp_path):
    cfg = load_config(Config, write_yaml(tmp_path / "c.yaml", {"weight": 2, "a": {"inner": {"lr": 1}}}))
    assert cfg.weight == 2.0 and isinstance(cfg.weight, float)
    assert isinstance(cfg.a.inner.lr, float)


def test_literal_is_checked(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(Config, write_yaml(tmp_path / "c.yaml", {"a": {"inner": {"mode": "medium"}}}))
    assert "a.inner.mode" in str(info.value) and "medium" in str(info.value)


def test_unknown_key_names_full_dotted_key(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {"a": {"inner": {"dpeth": 3}}})
    with pytest.raises(ConfigError) as info:
        load_config(Config, path)
    message = str(info.value)
    assert "a.inner.dpeth" in message
    assert str(path) in message
    assert "depth" in message  # the valid keys are listed
    with pytest.raises(ConfigError, match="nmae"):
        load_config(Config, None, ["nmae=x"])


@pytest.mark.parametrize("data,key", [
    ({"a": {"b": "three"}}, "a.b"),
    ({"a": {"b": 1.5}}, "a.b"),
    ({"a": {"b": True}}, "a.b"),            # bool is not an int
    ({"verbose": 1}, "verbose"),
    ({"views": [0, "x"]}, "views[1]"),
    ({"views": 5}, "views"),
    ({"a": {"inner": {"lr": "fast"}}}, "a.inner.lr"),
    ({"size": [1, 2, 3]}, "size"),
    ({"a": 3}, "a"),
    ({"name": 5}, "name"),
])
def test_wrong_type_names_key(tmp_path, data, key):
    with pytest.raises(ConfigError) as info:
        load_config(Config, write_yaml(tmp_path / "c.yaml", data))
    assert key in str(info.value)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Config, tmp_path / "nope.yaml")
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Config, path)


def test_save_load_round_trip(tmp_path):
    cfg = load_config(Config, None, ["a.inner.depth=9", "views=[3]", "out=null", "size=[8, 16]", "weight=0.25"])
    save_config(cfg, tmp_path / "sub" / "config.yaml")
    assert load_config(Config, tmp_path / "sub" / "config.yaml") == cfg
    plain = yaml.safe_load((tmp_path / "sub" / "config.yaml").read_text())
    assert plain == to_dict(cfg) and plain["size"] == [8, 16]
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["config.yaml"]


def test_parse_cli(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {"name": "cli"})
    cfg, args = parse_cli(Config, "test", ["--config", str(path), "--set", "a.b=1", "--set", "weight=3"])
    assert cfg.name == "cli" and cfg.a.b == 1 and cfg.weight == 3.0
    assert args.config == str(path) and not args.dry_run


def test_parse_cli_dry_run_prints_yaml(tmp_path, capsys):
    path = write_yaml(tmp_path / "c.yaml", {"name": "dry"})
    with pytest.raises(SystemExit) as info:
        parse_cli(Config, "test", ["--config", str(path), "--set", "a.inner.depth=4", "--dry-run"])
    assert info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["name"] == "dry" and printed["a"]["inner"]["depth"] == 4
    assert printed == to_dict(load_config(Config, path, ["a.inner.depth=4"]))
    assert dump_config(Config()) == yaml.safe_dump(to_dict(Config()), sort_keys=False)


def test_parse_cli_bad_key_exits_with_message(capsys):
    with pytest.raises(SystemExit) as info:
        parse_cli(Config, "test", ["--set", "a.nope=1"])
    assert info.value.code == 2
    assert "a.nope" in capsys.readouterr().err


# -- validation -----------------------------------------------------------------------------------------

@dataclass
class Stage:
    steps: list[int] = field(default_factory=lambda: [5, 5])
    lr: float = 0.1
    best: float = 0.0
    kind: Literal["adam", "sgd"] = "adam"
    NON_FINITE_OK = ("best",)   # e.g. -inf as "no score yet"
    RUN_ONLY = ("lr",)

    def validate(self) -> None:
        at_least(self, 1, "steps")


@dataclass
class Job:
    stage: Stage = field(default_factory=Stage)
    batch_size: int = 2
    log_every: int = 1
    RUN_ONLY = ("log_every",)

    def validate(self) -> None:
        if self.batch_size < 1:
            raise SettingError("batch_size", f"must be >= 1, got {self.batch_size}")


@pytest.mark.parametrize("override,message", [
    ("batch_size=0", "batch_size must be >= 1, got 0"),
    ("stage.steps=[5, 0]", "stage.steps[1] must be >= 1, got 0"),           # nested section's own check
    ("stage.lr=.nan", "stage.lr must be a finite number, got nan"),         # generic: every float
    ("stage.lr=-.inf", "stage.lr must be a finite number, got -inf"),
    ("stage.kind=adamw", "stage.kind must be one of 'adam', 'sgd', got 'adamw'"),
])
def test_settings_are_validated_naming_the_full_key(tmp_path, override, message):
    with pytest.raises(ConfigError) as info:
        load_config(Job, None, [override])
    assert str(info.value) == f"defaults: {message}"


def test_validation_also_checks_configs_built_in_python():
    assert load_config(Job, None, ["stage.best=-.inf"]).stage.best == float("-inf")  # a field that opts in
    with pytest.raises(SettingError, match="^stage.kind must be one of 'adam', 'sgd', got 'x'$"):
        validate_config(Job(stage=Stage(kind="x")))
    with pytest.raises(SettingError, match=r"^job.stage.steps\[0\] must be >= 1"):
        validate_config(Job(stage=Stage(steps=[0])), "job")


def test_dry_run_refuses_what_a_run_refuses(capsys):
    for extra in ([], ["--dry-run"]):
        with pytest.raises(SystemExit) as info:
            parse_cli(Job, "test", ["--set", "stage.steps=[0]", *extra])
        assert info.value.code == 2
        assert "stage.steps[0] must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("override,message", [
    ("pretrain.batch_size=0", "pretrain.batch_size must be >= 1, got 0"),
    ("pretrain.lr_g=.nan", "pretrain.lr_g must be a finite number, got nan"),
    ("pretrain.lr_d=0", "pretrain.lr_d must be > 0, got 0"),
    ("pretrain.ema_alpha=1.5", "pretrain.ema_alpha must be in [0, 1], got 1.5"),
    ("pretrain.betas=[0.0, 1.0]", "pretrain.betas must be two numbers in [0, 1), got [0.0, 1.0]"),
    ("camera.batch_size=0", "camera.batch_size must be >= 1, got 0"),
    ("camera.lr=.inf", "camera.lr must be a finite number, got inf"),
    ("camera.image_size=100", "camera.image_size must be a positive multiple of 64, got 100"),
    ("camera.lr_decay=linear", "camera.lr_decay must be one of 'none', 'cosine', got 'linear'"),
    ("camera.rotation_head=euler", "camera.rotation_head must be one of 'quaternion', '6d', got 'euler'"),
    ("camera.predict.batch_size=0", "camera.predict.batch_size must be >= 1, got 0"),
    ("model.norm=group", "model.norm must be one of 'batch', 'instance', 'none', got 'group'"),
    ("model.mesh_resolution=12", "model.mesh_resolution must be a power of two >= 8, got 12"),
    ("template.rings=1", "template.rings must be >= 2, got 1"),
    ("sample.count=0", "sample.count must be >= 1, got 0"),
    ("synthetic.splits={train: -1}", "synthetic.splits.train must be a whole number >= 0, got -1"),
    ("synthetic.template.segments=30", "synthetic.template.segments must be a positive multiple of 4, got 30"),
    ("synthetic.image_format=gif", "synthetic.image_format must be one of 'png', 'jpg', got 'gif'"),
    ("pseudogt.batch_size=0", "pseudogt.batch_size must be >= 1, got 0"),
    ("segment.category=cat", "segment.category must be one of 'bird', 'car', got 'cat'"),
    ("segment.score_threshold=2", "segment.score_threshold must be in [0, 1], got 2.0"),
    ("evaluation.limit=-1", "evaluation.limit must be >= 1, got -1"),
    ("evaluation.crop.img_size=0", "evaluation.crop.img_size must be >= 1, got 0"),
    ("evaluation.fid.batch_size=0", "evaluation.fid.batch_size must be >= 1, got 0"),
    ("device=gpu", "device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    ("inversion.loss.texture_loss=perceptual",
     "inversion.loss.texture_loss must be one of 'chamfer', 'l1', 'contextual', got 'perceptual'"),
    ("inversion.loss.mask_loss=iou", "inversion.loss.mask_loss must be one of 'chamfer', 'raster', got 'iou'"),
    ("inversion.loss.contextual_bandwidth=0", "inversion.loss.contextual_bandwidth must be a finite number > 0"),
    ("inversion.loss.contextual_eps=.nan", "inversion.loss.contextual_eps must be a finite number"),
])
def test_every_section_of_the_experiment_is_validated(override, message):
    from meshinv.config import ExperimentConfig

    with pytest.raises(ConfigError) as info:
        load_config(ExperimentConfig, REPO_ROOT / "configs" / "synthetic.yaml", [override])
    assert message in str(info.value)


def test_each_shared_setting_has_one_owner():
    """The inversion's crop default, the shipped prior and the camera-trust threshold are each said
    once; configs/synthetic.yaml says the prior and the test split once (YAML anchors)."""
    from meshinv.config import ExperimentConfig
    from meshinv.data.camera_predictions import TRUSTED_OVERLAY_IOU, select_camera
    from meshinv.evaluation.config import EvaluationConfig
    from meshinv.inversion.config import CameraInitConfig, InversionConfig, default_inversion_crop
    from meshinv.training import camera as camera_training

    assert EvaluationConfig().crop == InversionConfig().crop == default_inversion_crop()
    assert CameraInitConfig().min_prediction_iou == camera_training.TRUSTED_IOU == TRUSTED_OVERLAY_IOU == 0.7
    assert select_camera.__defaults__ == (TRUSTED_OVERLAY_IOU,)
    assert ExperimentConfig().sample.checkpoint == InversionConfig().checkpoint
    settings = "\n".join(line.split("#")[0] for line in (REPO_ROOT / "configs" / "synthetic.yaml").open())
    assert settings.count("synthetic_prior_ours.pt") == 1 and settings.count("datasets/synthetic/test") == 1
    cfg = load_config(ExperimentConfig, REPO_ROOT / "configs" / "synthetic.yaml")
    assert cfg.sample.checkpoint == cfg.inversion.checkpoint == "pretrained/synthetic_prior_ours.pt"
    assert cfg.evaluation.data_dir == cfg.inversion.data == "datasets/synthetic/test"


def test_changed_settings_skip_the_run_only_ones(tmp_path):
    job = Job()
    assert run_only_settings(job, "job") == {"job.log_every", "job.stage.lr"}
    before = {"job": to_dict(job)}
    after = {"job": to_dict(Job(batch_size=3, log_every=7, stage=Stage(lr=0.5, steps=[5, 6])))}
    assert changed_settings(before, after, ["job"]) == ["job.batch_size", "job.log_every", "job.stage.lr",
                                                        "job.stage.steps"]
    assert changed_settings(before, after, ["job"], run_only_settings(job, "job")) == ["job.batch_size",
                                                                                        "job.stage.steps"]
    assert changed_settings(before, after, ["job"], ["job.stage"]) == ["job.batch_size", "job.log_every"]
    assert saved_run_config(tmp_path) is None
    save_config(job, tmp_path / "config.yaml")
    assert changed_settings({"job": saved_run_config(tmp_path)}, before, ["job"]) == []


# -- atomic writes -------------------------------------------------------------------------------------------

def test_atomic_write_success(tmp_path):
    target = tmp_path / "new" / "file.txt"
    with atomic_write(target) as f:
        f.write("hello")
        assert not target.exists()  # invisible until the block succeeds
    assert target.read_text() == "hello"
    assert os.listdir(target.parent) == ["file.txt"]


def test_atomic_write_failure_keeps_old_file(tmp_path):
    target = tmp_path / "file.txt"
    save_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write("half-written")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["file.txt"]  # no temporary file left


def test_atomic_write_failure_creates_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(tmp_path / "x.bin", "wb") as f:
            f.write(b"\x00")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


# -- pretrained weights ----------------------------------------------------------------------------------------

@pytest.fixture
def weight_dirs(tmp_path, monkeypatch):
    env_dir, torch_home = tmp_path / "pretrained_env", tmp_path / "torch_home"
    env_dir.mkdir()
    (torch_home / "hub" / "checkpoints").mkdir(parents=True)
    monkeypatch.setenv("MESHINV_PRETRAINED_DIR", str(env_dir))
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    return env_dir, torch_home / "hub" / "checkpoints"


def test_find_weights_in_env_dir(weight_dirs):
    env_dir, hub = weight_dirs
    (env_dir / "test_weights_abc.pth").write_bytes(b"x")
    assert find_weights("test_weights_abc.pth") == env_dir / "test_weights_abc.pth"
    # The environment folder is searched before the torch hub cache.
    (hub / "test_weights_abc.pth").write_bytes(b"y")
    assert find_weights("test_weights_abc.pth") == env_dir / "test_weights_abc.pth"
    (hub / "only_in_hub_abc.pth").write_bytes(b"z")
    assert find_weights("only_in_hub_abc.pth") == hub / "only_in_hub_abc.pth"


def test_find_weights_absolute_path(tmp_path, weight_dirs):
    path = tmp_path / "elsewhere.pth"
    path.write_bytes(b"x")
    assert find_weights(str(path)) == path
    with pytest.raises(MissingWeightsError, match="missing_abs.pth"):
        find_weights(str(tmp_path / "missing_abs.pth"))


def test_missing_weights_error_names_file_and_folders(weight_dirs):
    env_dir, hub = weight_dirs
    with pytest.raises(MissingWeightsError) as info:
        find_weights("no_such_weights_4f2a.pth", what="test network")
    message = str(info.value)
    assert "no_such_weights_4f2a.pth" in message and "test network" in message
    searched = weight_search_dirs()
    assert searched[0] == env_dir and searched[-1] == hub
    for folder in searched:
        assert str(folder) in message
    assert isinstance(info.value, FileNotFoundError)


def test_atomic_write_gives_normal_permissions(tmp_path):
    import stat

    from meshinv.utils.io import save_text

    umask = os.umask(0o022)
    try:
        save_text(tmp_path / "out.txt", "x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == 0o644
