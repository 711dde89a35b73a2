"""Where pretrained weight files come from: local folders first, then a download into the torch hub
cache for the files that torchvision and pytorch-fid publish, as they do.

Search order for a file name (`find_weights`):
  1. the folder in $MESHINV_PRETRAINED_DIR, if set;
  2. the repository's `pretrained/` folder;
  3. the torch hub checkpoint cache, `$TORCH_HOME/hub/checkpoints` (torch.hub.get_dir()), where
     torchvision and pytorch-fid keep what they download.
A file in none of them that `known_weights()` names is downloaded into that cache with torch.hub's
own downloader (written under a temporary name and moved in place when complete), from the URL the
owning library publishes (torchvision's weight enums, pytorch-fid's FID_WEIGHTS_URL), checking the
sha256 prefix in the file name where that library does (torchvision's `check_hash=True`;
pytorch-fid checks none). $MESHINV_OFFLINE=1 turns downloads off (the test suite sets it).

A file that is missing and cannot be fetched (offline, not a known one, a failed download,
a hash mismatch) is a MissingWeightsError naming the file, its URL when known, every folder it may
be put in, and why. Release checkpoints on file-sharing sites are never fetched: pretrained/README.md
says where each comes from.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
OFFLINE_ENV = "MESHINV_OFFLINE"


class MissingWeightsError(FileNotFoundError):
    """A pretrained weight file is not on this machine and could not be fetched."""


@dataclass(frozen=True)
class WeightSource:
    """Where a fetchable file comes from: its URL, and whether its name's sha256 prefix is checked."""

    url: str
    check_hash: bool
    publisher: str      # the library whose weight API gives the URL


@functools.lru_cache(maxsize=None)
def known_weights() -> dict[str, WeightSource]:
    """{file name: WeightSource} of every file that is fetched automatically. The URLs
    are read from the publishing libraries, so they are theirs, not copies."""
    from torchvision.models import Inception_V3_Weights, ResNet18_Weights, VGG19_Weights
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights

    enums = (VGG19_Weights.IMAGENET1K_V1, ResNet18_Weights.IMAGENET1K_V1, Inception_V3_Weights.IMAGENET1K_V1,
             MaskRCNN_ResNet50_FPN_Weights.COCO_V1)
    # torchvision's models load their files with check_hash=True.
    sources = [WeightSource(weights.url, True, "torchvision") for weights in enums]
    try:
        from pytorch_fid.inception import FID_WEIGHTS_URL
    except ImportError:  # optional (the 'fid' extra); without it the FID Inception cannot be built anyway
        pass
    else:
        # pytorch-fid's fid_inception_v3 loads it with torch.hub's default, check_hash=False.
        sources.append(WeightSource(FID_WEIGHTS_URL, False, "pytorch-fid"))
    return {source.url.rsplit("/", 1)[-1]: source for source in sources}


def downloads_enabled() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("1", "true", "yes", "on")


def hub_checkpoints_dir() -> Path:
    """The torch hub checkpoint cache, where downloads go (torch.hub.load_state_dict_from_url's)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def weight_search_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("MESHINV_PRETRAINED_DIR"):
        dirs.append(Path(os.environ["MESHINV_PRETRAINED_DIR"]))
    dirs.append(REPO_ROOT / "pretrained")
    dirs.append(hub_checkpoints_dir())
    return dirs


_WHERE_FROM = "(see pretrained/README.md for where each file comes from)"


def _download(filename: str, source: WeightSource) -> Path:
    """Download `filename` into the hub cache as torch.hub.load_state_dict_from_url does; raises
    whatever the download raises (OSError, a RuntimeError on a hash mismatch)."""
    import torch

    folder = hub_checkpoints_dir()
    folder.mkdir(parents=True, exist_ok=True)
    destination = folder / filename
    hash_prefix = None
    if source.check_hash:
        match = torch.hub.HASH_REGEX.search(filename)
        hash_prefix = match.group(1) if match else None
    log.info("downloading %s from %s into %s (%s's file; once only)", filename, source.url, folder,
             source.publisher)
    # Written to a temporary name and moved in place only when complete and its hash matches.
    torch.hub.download_url_to_file(source.url, str(destination), hash_prefix, progress=True)
    return destination


def find_weights(filename: str, what: str = "", fetch: bool = True) -> Path:
    """The path of weight file `filename`: the first search folder that has it, else (when `fetch`
    and known_weights() names it) a download into the torch hub cache. Raises MissingWeightsError
    naming the file, its URL when known, the folders to put it in, and why it could not be fetched.
    A path (with a folder in it) is taken as it is, relative to the working directory."""
    dirs = weight_search_dirs()
    searched = "\n  ".join(str(d) for d in dirs)
    prefix = f"{what}: " if what else ""
    if os.path.isabs(filename) or os.sep in filename:
        path = Path(filename)
        if path.is_file():
            return path
        raise MissingWeightsError(
            f"{prefix}{path} not found (a path is taken as given, relative to the working "
            f"directory {Path.cwd()}; a bare file name is looked for in:\n  {searched})\n{_WHERE_FROM}")
    for folder in dirs:
        if (folder / filename).is_file():
            return folder / filename
    source = known_weights().get(filename)
    if source is None:
        raise MissingWeightsError(f"{prefix}weight file {filename!r} not found. Put it in one of:\n  {searched}\n"
                                  f"It is not fetched automatically {_WHERE_FROM}")
    if not fetch:
        why = "not fetched here"
    elif not downloads_enabled():
        why = f"downloads are off ({OFFLINE_ENV}={os.environ[OFFLINE_ENV]})"
    else:
        try:
            return _download(filename, source)
        except (OSError, RuntimeError) as err:  # no network, HTTP error, disk full, hash mismatch
            why = f"downloading it into {hub_checkpoints_dir()} failed: {str(err) or type(err).__name__}"
            log.debug("download of %s failed", source.url, exc_info=True)
    raise MissingWeightsError(
        f"{prefix}weight file {filename!r} not found, and {why}. Download it from {source.url} and put it "
        f"in one of:\n  {searched}\n{_WHERE_FROM}")


def resolve_weights(path_or_name: str | os.PathLike, what: str = "") -> Path:
    """An existing file as it is; otherwise `find_weights` (a bare file name in the search folders,
    fetched when it is a known one)."""
    path = Path(path_or_name)
    return path if path.is_file() else find_weights(str(path_or_name), what)
