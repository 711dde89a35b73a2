"""Pseudo-ground-truth UV maps for pretraining, built as ConvMesh does (docs/method.md sections 4 and 9).

From an image, its mask, a camera and a mesh of the template's topology, every texel of the UV map
is traced to its point on the mesh surface, projected into the image, and given the image colour
there if that surface point is visible (front-facing, not hidden by another part of the mesh, and
on the object's mask, so occluders and background never leak in). The result is a partial texture
and its visibility mask (`texture_alpha`); the mesh gives the deformation map.

The files, one per image, are in the format of meshinv.data.pseudogt (`save_pseudogt`).

ConvMesh's released pseudo-GT (pickled torch tensors) is read only by `convert_convmesh_pseudogt`,
an explicit one-time conversion into this format.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..geometry.template import MeshTemplate, build_template
from ..render.texels import TexelSurface, seen_texels, texel_surface
from ..utils.config import at_least, require, within
from .synthetic import SyntheticConfig
from ..data.datasets import open_dataset
from ..data.preprocess import CropConfig
from ..data.pseudogt import pseudogt_dirname, save_pseudogt
from ..data.sample import DataError

log = logging.getLogger(__name__)


def build_pseudogt_textures(images: torch.Tensor, masks: torch.Tensor, cameras: torch.Tensor, vertices: torch.Tensor,
                            template: MeshTemplate, surface: TexelSurface,
                            depth_tolerance: float = 0.02, min_facing: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Partial UV textures seen in a batch of images.

    images (B, 3, S, S) in [-1, 1]; masks (B, 1, S, S) visible foreground; cameras (B, 7) NDC;
    vertices (B, V, 3) object space. Returns texture (B, 3, T, T) (0 where unseen) and
    texture_alpha (B, 1, T, T).

    A texel is seen when its surface point faces the camera (the z of its face's unit normal in NDC
    exceeds `min_facing`: grazing texels are stretched across few pixels and smear), is within
    `depth_tolerance` (NDC z) of the nearest surface at its pixel, projects inside the image, and
    lands on the mask (meshinv.render.texels.seen_texels).
    """
    batch, size = images.shape[0], surface.size
    if tuple(masks.shape[-2:]) != tuple(images.shape[-2:]):
        raise ValueError(f"masks are {tuple(masks.shape[-2:])} but images {tuple(images.shape[-2:])}")
    with torch.no_grad():
        seen, points = seen_texels(masks, cameras, vertices, template, surface, depth_tolerance, min_facing)
        grid = torch.stack([points[..., 0], -points[..., 1]], dim=-1)[:, :, None]
        colors = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)[..., 0]

        texture = images.new_zeros(batch, 3, size * size)
        alpha = images.new_zeros(batch, 1, size * size)
        weight = seen[:, None].to(images.dtype)
        texture[:, :, surface.texel] = colors * weight
        alpha[:, :, surface.texel] = weight
    return texture.reshape(batch, 3, size, size), alpha.reshape(batch, 1, size, size)


def masked_image(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The image on black (-1) outside the mask: the image branch's real sample."""
    return torch.where(mask > 0.5, image, torch.full_like(image, -1.0))


@dataclass
class PseudoGTConfig:
    """How pseudo-GT is built from a dataset split (scripts/build_pseudogt.py)."""

    split: str = "train"               # which split of the dataset to build it for
    texture_size: int = 128
    depth_tolerance: float = 0.02
    min_facing: float = 0.2
    batch_size: int = 16
    overwrite: bool = False            # rebuild files that already exist
    # One-time conversion of ConvMesh's released pseudo-GT instead (unpickles: trusted files only).
    convert_convmesh: Optional[str] = None   # its pseudogt_<T>x<T>/ folder
    convmesh_poses: Optional[str] = None     # its cache/poses_metadata.npz (cameras)
    convert_out: Optional[str] = None        # where our files go

    def validate(self) -> None:
        at_least(self, 1, "texture_size", "batch_size")
        at_least(self, 0, "depth_tolerance")
        within(self, -1, 1, "min_facing")  # a cosine
        require(not self.convert_convmesh or bool(self.convert_out), "convert_out",
                "must be given with convert_convmesh (--out: the folder for our converted files)")


def build_pseudogt_folder(dataset, template: MeshTemplate, cfg: PseudoGTConfig, out_folder: str | os.PathLike,
                          mesh_of=None, overwrite: bool = False) -> dict:
    """Write one pseudo-GT file per sample of `dataset` (Samples whose gt holds `vertices` and
    optionally `deformation_map`; `mesh_of(vertices)` fits a map otherwise). Finished files are
    kept unless `overwrite`; a sample that fails is logged and recorded, and the rest go on.
    Returns {"written": n, "kept": n, "failed": {image_id: reason}}."""
    out = Path(out_folder)
    surface = texel_surface(template, cfg.texture_size)
    report = {"written": 0, "kept": 0, "failed": {}}
    pending: list = []

    def flush() -> None:
        if not pending:
            return
        images, masks, cameras, vertices = (torch.stack(t) for t in zip(
            *[(s.image, s.mask, s.camera, s.gt["vertices"]) for s in pending]))
        textures, alphas = build_pseudogt_textures(images, masks, cameras, vertices, template, surface,
                                                   cfg.depth_tolerance, cfg.min_facing)
        for sample, texture, alpha in zip(pending, textures, alphas):
            mesh = sample.gt.get("deformation_map")
            if mesh is None:
                mesh = mesh_of(sample.gt["vertices"])
            save_pseudogt(out / f"{sample.image_id}.npz", texture=texture, texture_alpha=alpha, mesh=mesh,
                          image_256=masked_image(sample.image, sample.mask), mask_256=sample.mask,
                          camera=sample.camera, class_id=sample.class_id, image_id=sample.image_id)
            report["written"] += 1
        pending.clear()

    ids = dataset.image_ids()
    for index in tqdm(range(len(dataset)), desc=f"pseudo-GT {out.name}", unit="img"):
        if not overwrite and (out / f"{ids[index]}.npz").is_file():
            report["kept"] += 1
            continue
        try:
            sample = dataset[index]
            if sample.camera is None or "vertices" not in sample.gt:
                raise DataError(f"{sample.source}: pseudo-GT needs a camera and a mesh (gt vertices)")
        except DataError as e:
            log.error("skipping %s: %s", ids[index], e)
            report["failed"][ids[index]] = str(e)
            continue
        pending.append(sample)
        if len(pending) == cfg.batch_size:
            flush()
    flush()
    log.info("%s: %d written, %d kept, %d failed", out, report["written"], report["kept"], len(report["failed"]))
    return report


def synthetic_pseudogt_folder(synthetic: SyntheticConfig, cfg: PseudoGTConfig) -> Path:
    """Where the pseudo-GT of the synthetic split cfg.split goes: <split>/pseudogt_<T>x<T>/."""
    return Path(synthetic.out_dir) / cfg.split / pseudogt_dirname(cfg.texture_size)


def build_synthetic_pseudogt(synthetic: SyntheticConfig, cfg: PseudoGTConfig) -> dict:
    """build_pseudogt_folder for the synthetic split cfg.split (read through open_dataset), with its
    ground-truth meshes and cameras, into synthetic_pseudogt_folder. Returns the report."""
    dataset = open_dataset(synthetic.out_dir, CropConfig(img_size=synthetic.image_size), split=cfg.split,
                           kind="synthetic")
    return build_pseudogt_folder(dataset, build_template(synthetic.template), cfg,
                                 synthetic_pseudogt_folder(synthetic, cfg), overwrite=cfg.overwrite)


# -- ConvMesh's released files ------------------------------------------------------------------------

def convert_convmesh_pseudogt(src_folder: str | os.PathLike, dst_folder: str | os.PathLike,
                              poses_metadata: Optional[str | os.PathLike] = None,
                              class_ids: Optional[list[int]] = None, *, trust_pickled_files: bool = False) -> int:
    """One-time conversion of ConvMesh's released `pseudogt_<T>x<T>/<index>.npz` (each a pickled dict
    of torch tensors) into our format. Unpickling runs whatever code the files hold, so it is
    refused unless `trust_pickled_files` (the caller vouches for the files' origin). Cameras come
    from `cache/poses_metadata.npz` (scale, translation, rotation as quaternion rows) when given,
    class ids from `class_ids` (one per index). Returns the count."""
    src, dst = Path(src_folder), Path(dst_folder)
    if not trust_pickled_files:
        raise DataError(f"{src}: ConvMesh's pseudo-GT files are Python pickles, and unpickling runs whatever code "
                        "they hold; convert only files you trust, and say so with --trust-pickled-files "
                        "(trust_pickled_files=True)")
    paths = sorted(src.glob("*.npz"), key=lambda p: int(p.stem) if p.stem.isdigit() else p.stem)
    if not paths:
        raise DataError(f"{src}: no .npz files to convert")
    log.warning("unpickling %d ConvMesh pseudo-GT files from %s (trusted, as the caller said)", len(paths), src)
    poses = None
    if poses_metadata is not None:
        poses = np.load(poses_metadata, allow_pickle=True)["data"].item()
    for path in paths:
        data = np.load(path, allow_pickle=True)["data"].item()
        index = int(path.stem) if path.stem.isdigit() else None
        image = torch.as_tensor(data.get("image_256", data["image"]))[:3].float()
        mask = (image > -1).any(0, keepdim=True).float()  # black background marks the outside
        camera = None
        if poses is not None and index is not None:
            rotation = torch.as_tensor(poses["rotation"][index]).float().reshape(-1)
            if rotation.numel() == 4:
                camera = torch.cat([torch.as_tensor(poses["scale"][index]).float().reshape(1),
                                    torch.as_tensor(poses["translation"][index]).float().reshape(2), rotation])
        save_pseudogt(dst / path.name, texture=torch.as_tensor(data["texture"]).float(),
                      texture_alpha=torch.as_tensor(data["texture_alpha"]).float(),
                      mesh=torch.as_tensor(data["mesh"]).float(), image_256=image, mask_256=mask, camera=camera,
                      class_id=class_ids[index] if class_ids is not None and index is not None else -1,
                      image_id=path.stem)
    return len(paths)
