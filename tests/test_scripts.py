"""The command-line scripts, run as a user runs them (subprocess, small sizes)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import yaml

from conftest import REPO_ROOT
from meshinv.geometry import read_obj


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_render_mesh_demo_writes_turntable_and_mesh(tmp_path):
    out = tmp_path / "demo"
    result = run_script("scripts/render_mesh.py", "--config", "configs/render_demo.yaml",
                        "--set", f"out_dir={out}", "--set", "image_size=64", "--set", "azimuths=[0,90,180]",
                        "--set", "device=cpu")
    assert result.returncode == 0, result.stderr
    for name in ["turntable.png", "mesh.obj", "mesh.mtl", "mesh.png", "config.yaml", "summary.json", "log.txt"]:
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["views"] == 3
    # The object is visible in every view and does not fill the frame.
    assert all(0.1 < c < 0.9 for c in summary["mask_coverage"])
    mesh = read_obj(out / "mesh.obj")
    assert mesh.vertices.shape == (482, 3) and mesh.faces.shape == (960, 3)
    assert np.isfinite(mesh.vertices).all()
    # The resolved config records the overrides.
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["image_size"] == 64 and saved["azimuths"] == [0.0, 90.0, 180.0]


def test_dry_run_prints_resolved_config():
    result = run_script("scripts/render_mesh.py", "--config", "configs/render_demo.yaml", "--set", "template.rings=31",
                        "--dry-run")
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load(result.stdout)
    assert cfg["template"]["rings"] == 31 and cfg["image_size"] == 256


def test_unknown_config_key_is_a_clear_error():
    result = run_script("scripts/render_mesh.py", "--config", "configs/render_demo.yaml", "--set", "templat.rings=31",
                        "--dry-run")
    assert result.returncode == 2
    assert "templat" in result.stderr and "unknown config key" in result.stderr


# Which script's config class reads each file in configs/. A new config file must be added here.
CONFIG_READERS = {"render_demo.yaml": ("render_mesh", "RenderMeshConfig"),
                  "synthetic.yaml": ("make_synthetic", "ExperimentConfig"),
                  "cub.yaml": ("pretrain", "ExperimentConfig"), "p3d.yaml": ("pretrain", "ExperimentConfig")}


def test_every_config_file_loads():
    """Each YAML in configs/ is checked against the config class of the script that reads it."""
    import importlib

    from meshinv.utils.config import load_config

    files = sorted(p.name for p in (REPO_ROOT / "configs").glob("*.yaml"))
    assert files == sorted(CONFIG_READERS), "register every config file in CONFIG_READERS"
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        for name, (module, cls) in CONFIG_READERS.items():
            load_config(getattr(importlib.import_module(module), cls), REPO_ROOT / "configs" / name)
    finally:
        sys.path.pop(0)


def test_make_synthetic_then_build_pseudogt(tmp_path):
    out = tmp_path / "synthetic"
    result = run_script("scripts/make_synthetic.py", "--config", "configs/synthetic.yaml", "--out", str(out),
                        "--set", "synthetic.splits={train: 4, test: 2}", "--set", "synthetic.image_size=64",
                        "--set", "synthetic.texture_size=32", "--set", "synthetic.contact_sheet_rows=2")
    assert result.returncode == 0, result.stderr
    for split, count in (("train", 4), ("test", 2)):
        assert len(list((out / split / "images").glob("*.png"))) == count
        assert len(list((out / split / "gt").glob("*.npz"))) == count
        annotations = json.loads((out / split / "annotations.json").read_text())
        assert set(annotations[f"{split}_00000"]) == {"class_id", "camera", "bbox"}
    assert (out / "contact_sheet.png").is_file() and (out / "summary.json").is_file()

    result = run_script("scripts/build_pseudogt.py", "--config", "configs/synthetic.yaml",
                        "--set", f"synthetic.out_dir={out}", "--set", "synthetic.image_size=64",
                        "--set", "pseudogt.texture_size=32")
    assert result.returncode == 0, result.stderr
    folder = out / "train" / "pseudogt_32x32"
    assert len(list(folder.glob("*.npz"))) == 4
    assert json.loads((folder / "report.json").read_text())["failed"] == {}
