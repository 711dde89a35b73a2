"""What an inversion run leaves on disk, and how to read it back.

    OUT/summary.json              every image with a result or a failure in OUT: status (done / failed
                                  with its reason), IoU, loss; mean IoU, seconds per image
    OUT/<image id>/result.pt      an InversionRecord (below), written last: its presence means done
                   input.png      the cropped input image the inversion saw
                   target_mask.png  its target mask (what the losses and the IoU used)
                   render.png     the reconstruction rendered in the input view, over the input
                   pred_mask.png  the rendered hard mask in the input view
                   mesh.obj, mesh.mtl, mesh.png   the textured mesh (object space)
                   turntable.gif  the mesh turned about its vertical axis

Every file is written atomically, so a killed run leaves complete files only, and the per-image
folders of finished images are never touched again by a re-run. The folder as a whole (lock, resume
guard, which names a result folder may have) is meshinv/inversion/output.py's.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

import torch

from ..models.checkpoints import read_checkpoint
from ..utils.config import RUN_CONFIG_FILE, saved_run_config  # noqa: F401 (re-exported)
from ..utils.io import save_torch

RESULT_FILE = "result.pt"
RESULT_FORMAT = "meshinv-inversion-result"
RESULT_VERSION = 1


@dataclass
class InversionRecord:
    """The result of inverting one image.

    z             (D,) optimised latent
    camera        (7,) optimised camera [s, tx, ty, qw, qx, qy, qz] in the NDC of the crop, q unit
    camera_init   (7,) the camera the optimisation started from
    class_id      class given to the generator (-1 for an unconditional one)
    texture       (3, T, T) predicted UV texture in [-1, 1]
    mesh_map      (3, 32, 32) predicted deformation map
    vertices      (V, 3) object-space vertices of the predicted mesh
    image_size    side of the square crop (and renders) the inversion worked at
    iou           hard rendered mask vs. target mask in the input view
    losses        final weighted loss terms (name -> float) and "total"
    init_loss     total loss of the chosen initial z
    seconds       wall time spent on this image (its share of its batch)
    source        path of the original image
    camera_source where camera_init came from: predictor, predictions, dataset or dataset+noise, or the
                  camera search's verdict ("search", "predictor+search: kept the start", ...;
                  meshinv/inversion/camera_search.py)
    camera_init_score  the camera search's joint score of camera_init (its full loss with the best
                  of the scored z candidates); NaN without a search
    crop          the crop the input was cut with (CropConfig as a dict, meshinv.utils.config.to_dict),
                  so that evaluation cuts ground truth the same way; None in results written
                  before it was recorded (evaluation then reads the run's config.yaml)
    refine        what the refinement after the inversion did (meshinv/inversion/refine.py:
                  Refinement.info): texture, shape, seconds, iou_before, iou_after, ...; {} when it
                  was off (and in results written before it existed). texture, mesh_map, vertices and
                  iou are then the refined result's, losses still the inversion's
    """

    image_id: str
    z: torch.Tensor
    camera: torch.Tensor
    camera_init: torch.Tensor
    class_id: int
    texture: torch.Tensor
    mesh_map: torch.Tensor
    vertices: torch.Tensor
    image_size: int
    iou: float
    losses: dict[str, float] = field(default_factory=dict)
    init_loss: float = float("nan")
    seconds: float = float("nan")
    source: str = ""
    camera_source: str = ""
    camera_init_score: float = float("nan")
    crop: Optional[dict] = None
    refine: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(format=RESULT_FORMAT, format_version=RESULT_VERSION)
        return data

    def save(self, path: str | os.PathLike) -> None:
        save_torch(path, {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v)
                          for k, v in self.to_dict().items()})


def load_record(path: str | os.PathLike) -> InversionRecord:
    """Read an InversionRecord (a result.pt file, or the folder holding one). A missing file is a
    FileNotFoundError; a damaged one, or one that holds no record, a ValueError naming it."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no inversion result at {path}")
    data = read_checkpoint(path)
    if not isinstance(data, dict) or data.get("format") != RESULT_FORMAT:
        raise ValueError(f"{path} is not a {RESULT_FORMAT} file")
    if data.get("format_version") != RESULT_VERSION:
        raise ValueError(f"{path}: unsupported format_version {data.get('format_version')!r} "
                         f"(this code reads {RESULT_VERSION})")
    names = {f.name for f in fields(InversionRecord)}
    return InversionRecord(**{k: v for k, v in data.items() if k in names})


def finished_ids(out_dir: str | os.PathLike) -> set[str]:
    """Image ids that already have a result in OUT (a re-run skips them)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return set()
    return {p.parent.name for p in out_dir.glob(f"*/{RESULT_FILE}")}


def iter_records(out_dir: str | os.PathLike, ids: Optional[list[str]] = None):
    """(image id, InversionRecord) for every finished image in OUT, sorted by id."""
    for image_id in sorted(ids if ids is not None else finished_ids(out_dir)):
        yield image_id, load_record(Path(out_dir) / image_id)


