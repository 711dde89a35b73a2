"""Shared test fixtures.

Reference fixtures from the original implementation live in $MESHINV_REFERENCE_DIR (default:
../shared/reference relative to the repository root); tests find files by pattern and skip, with
the reason, when the folder is absent.

Tests never touch the network: weight downloads are off ($MESHINV_OFFLINE, set here before anything
is imported, and inherited by the scripts the tests run); the download tests fake the server.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
from pathlib import Path

os.environ["MESHINV_OFFLINE"] = "1"  # meshinv.utils.weights.OFFLINE_ENV (not imported: nothing loads first)

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def restore_root_logging():
    """Scripts run in-process call setup_logging, which binds a handler to the stderr that pytest
    captures for that one test; left in place, later tests' warnings hit a closed stream."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def reference_dir() -> Path:
    return Path(os.environ.get("MESHINV_REFERENCE_DIR", REPO_ROOT.parent / "shared" / "reference"))


def reference_files(pattern: str) -> list[Path]:
    """Files in the reference folder matching `pattern`, sorted; empty when the folder is absent."""
    folder = reference_dir()
    return sorted(folder.glob(pattern)) if folder.is_dir() else []


@pytest.fixture
def reference_path():
    """reference_path('name') -> Path of a reference file, skipping the test if it is missing."""

    def get(name: str) -> Path:
        path = reference_dir() / name
        if not path.is_file():
            pytest.skip(f"reference fixture {path} not found (set MESHINV_REFERENCE_DIR)")
        return path

    return get


@contextlib.contextmanager
def output_lock_holder(out: Path):
    """Another process holding the inversion output folder's lock (as a second run would) during the
    block; yields it (a subprocess.Popen). It is killed (SIGKILL) at the end, leaving its lock file."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; from meshinv.inversion import OutputFolder\n"
         f"with OutputFolder({str(out)!r}).locked():\n    print('locked', flush=True); time.sleep(300)"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


# -- weight files: empty search folders and a fake download server ----------------------------------------

@pytest.fixture
def weight_folders(tmp_path, monkeypatch):
    """Empty weight search folders ($MESHINV_PRETRAINED_DIR, the repository's pretrained/, the hub
    cache) under tmp_path, whatever this machine holds elsewhere; returns the hub cache."""
    monkeypatch.setenv("MESHINV_PRETRAINED_DIR", str(tmp_path / "env"))
    monkeypatch.setattr("meshinv.utils.weights.REPO_ROOT", tmp_path / "repo")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home" / "hub" / "checkpoints"


class FakeServer:
    """Stands in for torch.hub's urlopen: serves `files` {url: bytes}, records the requested URLs,
    and raises URLError for any other URL."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []

    def __call__(self, request, *args, **kwargs):
        from urllib.error import URLError

        self.requests.append(request.full_url)
        if request.full_url not in self.files:
            raise URLError("name or service not known")
        return _FakeResponse(self.files[request.full_url])


class _FakeResponse(io.BytesIO):
    """What torch.hub.download_url_to_file reads: info().get_all("Content-Length"), read(n)."""

    def info(self):
        size = len(self.getvalue())

        class Headers:
            def get_all(self, key):
                return [str(size)] if key == "Content-Length" else None

        return Headers()


@pytest.fixture
def fake_weight_server(monkeypatch):
    """Downloads on, from a FakeServer with no files yet (add them to .files)."""
    monkeypatch.setenv("MESHINV_OFFLINE", "0")
    server = FakeServer()
    monkeypatch.setattr(torch.hub, "urlopen", server)
    return server


def register_weights(monkeypatch, name: str, source) -> None:
    """Make file `name` a known (fetchable) one, from `source` (a meshinv.utils.weights.WeightSource)."""
    from meshinv.utils import weights

    known = {**weights.known_weights(), name: source}
    monkeypatch.setattr(weights, "known_weights", lambda: known)


# The device of the CUDA tests (those marked requires_cuda, and the "cuda" parameter of device-
# parametrised tests). MESHINV_TEST_CUDA_DEVICE=cpu runs them on the CPU: CPU against CPU agrees
# trivially, but it checks their code paths, fixtures and arguments on a machine without a GPU.
CUDA_DEVICE = os.environ.get("MESHINV_TEST_CUDA_DEVICE", "cuda")


def device_available(name: str) -> bool:
    device = torch.device(name)
    if device.type != "cuda":
        return True
    return torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()


def cuda_devices() -> list:
    """[CUDA_DEVICE] with the test id "cuda" (so that -k cuda selects it), or [] when it is missing."""
    return [pytest.param(CUDA_DEVICE, id="cuda")] if device_available(CUDA_DEVICE) else []


requires_cuda = pytest.mark.skipif(not device_available(CUDA_DEVICE),
                                   reason=f"no {CUDA_DEVICE} device (MESHINV_TEST_CUDA_DEVICE=cpu runs these tests "
                                          "on the CPU)")


# Tests whose outcome rests on float rounding: optimisation and training trajectories, gradchecks,
# comparisons with the original's fixtures, dense-vs-tiled and cross-dtype agreement. They carry
# the `numeric` mark, which `make test-matrix` runs under every ATEN_CPU_CAPABILITY and thread
# count (the rest of the suite is exact integer or file logic). Whole files, or file::test prefixes.
NUMERIC_TESTS = (
    "test_losses.py", "test_generator.py", "test_renderer.py", "test_template.py", "test_evaluation.py",
    "test_inversion.py::test_objective", "test_inversion.py::test_a_batch", "test_inversion.py::test_optimisation",
    "test_inversion.py::test_unknown_classes", "test_inversion.py::test_cuda",
    "test_camera_predictor.py::test_a_few_steps", "test_camera_predictor.py::test_training_run",
    "test_pretrain.py::test_resuming", "test_pretrain.py::test_two_gloo", "test_pretrain.py::test_short_run",
    "test_fid.py::test_frechet", "test_fid.py::test_inception", "test_fid.py::test_fid_metrics",
    "test_fid.py::test_voxeliser", "test_fid.py::test_iou_3d", "test_cuda.py", "test_camera_search.py",
    "test_selection.py", "test_appearance_metrics.py", "test_ablation_losses.py",
    "test_refine.py::test_the_texture_stage", "test_refine.py::test_the_texture_strength", "test_refine.py::test_the_shape_stage",
    "test_refine.py::test_the_inversion_reports",
    "test_chamfer_pruning.py",
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = f"{item.path.name}::{item.name}"
        if any(name == pattern or name.startswith(pattern if "::" in pattern else pattern + "::")
               for pattern in NUMERIC_TESTS):
            item.add_marker(pytest.mark.numeric)
