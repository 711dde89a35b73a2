"""The data layer reads; what builds data with the renderer lives above it (meshinv.datagen). So no
module of meshinv/data imports the renderer, the models or anything above them, and importing
the readers loads neither."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT

DATA = REPO_ROOT / "meshinv" / "data"
# What the readers may build on: themselves, the geometry and the utilities (meshinv/README layout).
ALLOWED = ("meshinv.data", "meshinv.geometry", "meshinv.utils")


def meshinv_imports(path: Path) -> set[str]:
    """Absolute names of the meshinv modules a file imports, at any depth (lazy imports included)."""
    package = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.update([module] if node.module else [f"{module}.{alias.name}" for alias in node.names])
    return {name for name in found if name == "meshinv" or name.startswith("meshinv.")}


def test_meshinv_imports_resolves_relative_imports():
    assert meshinv_imports(DATA / "synthetic.py") >= {"meshinv.utils.images", "meshinv.data.folder"}
    assert "meshinv.render.settings" in meshinv_imports(REPO_ROOT / "meshinv" / "datagen" / "synthetic.py")


def test_no_data_module_imports_render_models_or_anything_above():
    wrong = {f"{path.name}: {name}" for path in sorted(DATA.glob("*.py")) for name in meshinv_imports(path)
             if not name.startswith(ALLOWED)}
    assert not wrong, f"meshinv/data imports beyond {ALLOWED}: {sorted(wrong)}"


def test_importing_every_reader_loads_no_renderer_or_model():
    code = ("import sys, meshinv.data, meshinv.data.datasets, meshinv.data.inspect, meshinv.data.pseudogt, "
            "meshinv.data.segment; print(sorted(m for m in sys.modules if m.startswith(('meshinv.render', "
            "'meshinv.models', 'meshinv.datagen', 'meshinv.training', 'meshinv.inversion', 'meshinv.evaluation'))))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
