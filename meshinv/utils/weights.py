"""Where pretrained weight files are looked for. Nothing is ever downloaded at run time.

Search order for a file name:
  1. the folder in $MESHINV_PRETRAINED_DIR, if set;
  2. the repository's `pretrained/` folder;
  3. the torch hub checkpoint cache, `$TORCH_HOME/hub/checkpoints` (torch.hub.get_dir()), which is
     where torchvision and pytorch-fid put the files they download on a machine with network.
A missing file is an error that names the file and every folder searched.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


class MissingWeightsError(FileNotFoundError):
    """A pretrained weight file is not on this machine."""


def weight_search_dirs() -> list[Path]:
    import torch

    dirs = []
    if os.environ.get("MESHINV_PRETRAINED_DIR"):
        dirs.append(Path(os.environ["MESHINV_PRETRAINED_DIR"]))
    dirs.append(REPO_ROOT / "pretrained")
    dirs.append(Path(torch.hub.get_dir()) / "checkpoints")
    return dirs


_WHERE_FROM = "(see pretrained/README.md for where each file comes from)"


def find_weights(filename: str, what: str = "") -> Path:
    """Return the path of `filename` in the first search folder that has it, or raise. A path (with
    a folder in it) is taken as it is, relative to the working directory."""
    dirs = weight_search_dirs()
    if os.path.isabs(filename) or os.sep in filename:
        path = Path(filename)
        if path.is_file():
            return path
        searched = "\n  ".join(str(d) for d in dirs)
        raise MissingWeightsError(
            f"{what + ': ' if what else ''}{path} not found (a path is taken as given, relative to the working "
            f"directory {Path.cwd()}; a bare file name is looked for in:\n  {searched})\n{_WHERE_FROM}")
    for folder in dirs:
        if (folder / filename).is_file():
            return folder / filename
    searched = "\n  ".join(str(d) for d in dirs)
    raise MissingWeightsError(
        f"{what + ': ' if what else ''}weight file {filename!r} not found. Put it in one of:\n  {searched}\n"
        f"{_WHERE_FROM}"
    )


def resolve_weights(path_or_name: str | os.PathLike, what: str = "") -> Path:
    """An existing file as it is; otherwise `find_weights` (a bare file name in the search folders)."""
    path = Path(path_or_name)
    return path if path.is_file() else find_weights(str(path_or_name), what)
