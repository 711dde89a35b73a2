"""Generation of the embedded default dataset: procedural birds photographed in clutter, with full
3D ground truth.

Each sample is one instance of a species (meshinv.datagen.synthetic_shapes) rendered by our renderer
through a weak-perspective camera (full 360 deg azimuth, elevation in a CUB-like range, small roll),
scaled so that the object fills a random fraction of the frame, over a cluttered background, and
in some images partly hidden by a branch-like occluder. The files it writes, and their reader
SyntheticDataset, are described in meshinv.data.synthetic.

Everything is a function of (config, split, index), so a split is reproducible from its seed and any
sample can be regenerated alone.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..geometry.camera import (
    WeakPerspectiveCamera, euler_to_matrix, matrix_to_quaternion, quaternion_multiply, turntable_quaternions,
)
from ..geometry.template import MeshTemplate, TemplateConfig, build_template
from ..render.settings import make_renderer
from ..utils.config import SettingError, at_least, greater_than, require, within
from ..data.preprocess import bbox_from_mask
from ..data.sample import PixelCamera
from ..utils.io import json_text, save_image, save_json, save_npz
from .synthetic_shapes import DeformationFitter, instance_params, make_species, species_texture, species_vertices

log = logging.getLogger(__name__)

SPLIT_INDEX = {"train": 0, "val": 1, "test": 2}


@dataclass
class SyntheticConfig:
    """What the procedural category looks like and how much of it to write."""

    out_dir: str = "datasets/synthetic"
    seed: int = 0                      # instances, cameras, backgrounds; a new seed gives new images
    species_seed: int = 0              # the class definitions (keep fixed to keep the same category)
    n_classes: int = 8
    splits: dict = field(default_factory=lambda: {"train": 2000, "val": 100, "test": 200})
    image_size: int = 256
    texture_size: int = 256
    template: TemplateConfig = field(default_factory=TemplateConfig)
    azimuth_deg: tuple[float, float] = (0.0, 360.0)
    elevation_deg: tuple[float, float] = (-20.0, 40.0)
    roll_deg: float = 10.0             # uniform in [-roll, roll]
    fill: tuple[float, float] = (0.5, 0.85)  # longest side of the object's box / image side
    translation_jitter: float = 0.1    # NDC shift of the object, bounded so that it stays in frame
    occluder_fraction: float = 0.2     # share of images with a branch in front of the object
    occluder_width: tuple[float, float] = (0.04, 0.09)  # fraction of the image side
    min_visible: float = 0.6           # an occluder hides at most 40% of the object
    image_format: Literal["png", "jpg"] = "png"   # png (lossless) or jpg
    contact_sheet_rows: int = 8        # samples in <out_dir>/contact_sheet.png (0 = none)

    def validate(self) -> None:
        for split, count in self.splits.items():
            require(split in SPLIT_INDEX, f"splits.{split}", f"is not a split; the splits are {', '.join(SPLIT_INDEX)}")
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise SettingError(f"splits.{split}", f"must be a whole number >= 0, got {count!r}")
        at_least(self, 1, "n_classes", "image_size", "texture_size")
        at_least(self, 0, "roll_deg", "translation_jitter", "contact_sheet_rows")
        within(self, -90, 90, "elevation_deg")
        within(self, 0, 1, "occluder_fraction", "min_visible")
        greater_than(self, 0, "fill", "occluder_width")
        within(self, 0, 1, "fill", "occluder_width")
        for name in ("azimuth_deg", "elevation_deg", "fill", "occluder_width"):
            low, high = getattr(self, name)
            require(low <= high, name, f"must be a range [low, high] with low <= high, got {[low, high]}")


@dataclass
class SyntheticSample:
    """One generated photo and its ground truth (arrays, before writing)."""

    image: np.ndarray          # (H, W, 3) float in [0, 1]
    visible_mask: np.ndarray   # (H, W) bool
    full_mask: np.ndarray      # (H, W) bool, ignoring occluders
    camera_ndc: torch.Tensor   # (7,) in the NDC of the full image
    vertices: torch.Tensor     # (V, 3) object space
    deformation_map: torch.Tensor  # (3, 32, 32)
    texture: torch.Tensor      # (3, T, T) in [-1, 1]
    class_id: int
    occluded: bool

    def bbox(self) -> list[float]:
        return list(bbox_from_mask(self.full_mask))

    def pixel_camera(self) -> PixelCamera:
        return ndc_to_pixel_camera(self.camera_ndc, self.image.shape[0])


def ndc_to_pixel_camera(camera: torch.Tensor, size: int) -> PixelCamera:
    """The inverse of the NDC normalisation for an uncropped size x size image."""
    c = camera.double().tolist()
    return PixelCamera(c[0] * size / 2, ((c[1] + 1) * size / 2, (c[2] + 1) * size / 2), tuple(c[3:7]))


def _axis_quaternion(axis: str, angle_deg: float) -> torch.Tensor:
    angles = torch.zeros(3, dtype=torch.float64)
    angles["xyz".index(axis)] = angle_deg
    return matrix_to_quaternion(euler_to_matrix(angles, "xyz", degrees=True))


def view_quaternion(azimuth_deg: float, elevation_deg: float, roll_deg: float) -> torch.Tensor:
    """(4,) float64: the canonical side view turned by azimuth about the vertical axis, tilted by
    elevation (positive: seen from above, the back comes into view), then rolled in the image."""
    base = turntable_quaternions([azimuth_deg], dtype=torch.float64)[0]
    # NDC flips y and z, so a positive angle about camera x turns the object's top towards the viewer.
    tilt = _axis_quaternion("x", elevation_deg)
    roll = _axis_quaternion("z", roll_deg)
    return quaternion_multiply(roll, quaternion_multiply(tilt, base))


# -- backgrounds and occluders -------------------------------------------------------------------------

def _smooth_field(gen: torch.Generator, channels: int, size: int, cells: int) -> torch.Tensor:
    coarse = torch.randn(1, channels, cells, cells, generator=gen)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0]


def _rand(gen: torch.Generator, lo: float = 0.0, hi: float = 1.0, shape=()) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen)


def cluttered_background(size: int, gen: torch.Generator) -> torch.Tensor:
    """(3, size, size) in [0, 1]: a colour gradient, multi-scale colour noise, and a random number of
    blurred-edge shapes (ellipses, boxes, stripes, checks). Never a flat colour."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    angle = _rand(gen, 0, 2 * math.pi)
    ramp = ((xs * torch.cos(angle) + ys * torch.sin(angle)) + 1.5) / 3  # (H, W) in about [0, 1]
    c0, c1 = _rand(gen, 0.05, 0.95, (3, 1, 1)), _rand(gen, 0.05, 0.95, (3, 1, 1))
    image = c0 * (1 - ramp) + c1 * ramp
    for cells, amplitude in ((3, 0.25), (8, 0.12), (24, 0.06)):
        image = image + amplitude * _rand(gen, 0.5, 1.0) * _smooth_field(gen, 3, size, cells)
    # Pull the colours part of the way to grey: outdoor scenes are far less saturated than noise.
    image = torch.lerp(image, image.mean(0, keepdim=True), _rand(gen, 0.2, 0.6))
    for _ in range(int(torch.randint(4, 14, (), generator=gen))):
        cx, cy = _rand(gen, -1.1, 1.1), _rand(gen, -1.1, 1.1)
        rx, ry = _rand(gen, 0.05, 0.5), _rand(gen, 0.05, 0.5)
        theta = _rand(gen, 0, math.pi)
        u = (xs - cx) * torch.cos(theta) + (ys - cy) * torch.sin(theta)
        v = -(xs - cx) * torch.sin(theta) + (ys - cy) * torch.cos(theta)
        kind = int(torch.randint(0, 4, (), generator=gen))
        if kind in (0, 2):  # ellipse (solid or striped)
            distance = (u / rx) ** 2 + (v / ry) ** 2 - 1
        else:               # box (solid or checked)
            distance = torch.maximum(u.abs() / rx, v.abs() / ry) - 1
        softness = _rand(gen, 0.01, 0.15)
        alpha = torch.sigmoid(-distance / softness) * _rand(gen, 0.5, 1.0)
        color = _rand(gen, 0.0, 1.0, (3, 1, 1)).expand(3, size, size)
        if kind == 2:
            period = _rand(gen, 0.03, 0.15)
            color = color * (0.6 + 0.4 * (torch.sin(u / period) > 0).float())
        elif kind == 3:
            period = _rand(gen, 0.03, 0.15)
            checks = ((u / period).floor() + (v / period).floor()) % 2
            color = color * (0.6 + 0.4 * checks)
        image = image * (1 - alpha) + color * alpha
    return image.clamp(0, 1)


def branch_occluder(size: int, gen: torch.Generator, through: tuple[float, float], width: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A bark-coloured, gently bent bar across the image through the NDC point `through`.
    Returns (colour (3, H, W) in [0, 1], coverage (H, W) bool)."""
    centres = (torch.arange(size, dtype=torch.float32) * 2 + 1) / size - 1
    ys, xs = torch.meshgrid(-centres, centres, indexing="ij")  # NDC: y up
    angle = _rand(gen, 0, math.pi)
    along = (xs - through[0]) * torch.cos(angle) + (ys - through[1]) * torch.sin(angle)
    across = -(xs - through[0]) * torch.sin(angle) + (ys - through[1]) * torch.cos(angle)
    bend = _rand(gen, 0.0, 0.15) * torch.sin(along * _rand(gen, 1.0, 3.0) + _rand(gen, 0, 2 * math.pi))
    taper = 1 + 0.3 * along * _rand(gen, -1.0, 1.0)
    coverage = (across - bend).abs() < width * taper
    bark = _rand(gen, 0.15, 0.5, (3, 1, 1)) * torch.tensor([1.0, 0.8, 0.55]).reshape(3, 1, 1)
    grain = 0.15 * torch.sin(along * _rand(gen, 20.0, 60.0))[None] + 0.1 * _smooth_field(gen, 1, size, 16)
    return (bark * (1 + grain)).clamp(0, 1), coverage


# -- one sample ---------------------------------------------------------------------------------------

class SyntheticGenerator:
    """Makes samples of one configured category: `make(split, index)` -> SyntheticSample."""

    def __init__(self, cfg: SyntheticConfig):
        self.cfg = cfg
        self.template: MeshTemplate = build_template(cfg.template)
        if not self.template.symmetric:
            raise ValueError("the synthetic category needs a symmetric template (template.symmetric: true)")
        self.fitter = DeformationFitter(self.template)  # for the configured template, not a cached 16-ring one
        self.species = make_species(cfg.n_classes, cfg.species_seed)
        self.renderer = make_renderer(cfg.image_size)

    def instance_seed(self, split: str, index: int) -> list[int]:
        if split not in SPLIT_INDEX:
            raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_INDEX)}")
        return [self.cfg.seed, SPLIT_INDEX[split], index]

    def make(self, split: str, index: int) -> SyntheticSample:
        cfg = self.cfg
        rng = np.random.default_rng(self.instance_seed(split, index) + [7])
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        class_id = int(rng.integers(cfg.n_classes))
        params, texture_rng = instance_params(self.species, class_id, int(rng.integers(2**31)))
        deformation_map = self.fitter.fit(species_vertices(params, self.template))
        texture = species_texture(params, texture_rng, cfg.texture_size)
        vertices = self.template.vertex_positions(deformation_map[None])[0]

        quaternion = view_quaternion(rng.uniform(*cfg.azimuth_deg), rng.uniform(*cfg.elevation_deg),
                                     rng.uniform(-cfg.roll_deg, cfg.roll_deg)).float()
        camera = self._frame(vertices, quaternion, rng)
        ndc = WeakPerspectiveCamera.from_tensor(camera[None]).transform(vertices[None])
        with torch.no_grad():
            render = self.template.render(self.renderer, ndc, texture[None])
        rendered = ((render.image[0] + 1) / 2).clamp(0, 1)
        full_mask = render.mask[0, 0] > 0.5

        image = torch.where(full_mask, rendered, cluttered_background(cfg.image_size, gen))
        visible = full_mask
        occluded = bool(rng.uniform() < cfg.occluder_fraction)
        if occluded:
            image, visible = self._occlude(image, full_mask, rng, gen)
            occluded = bool((visible != full_mask).any())
        return SyntheticSample(
            image=image.permute(1, 2, 0).numpy(), visible_mask=visible.numpy(), full_mask=full_mask.numpy(),
            camera_ndc=camera, vertices=vertices, deformation_map=deformation_map, texture=texture,
            class_id=class_id, occluded=occluded,
        )

    def _frame(self, vertices: torch.Tensor, quaternion: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """(7,) NDC camera: scale so that the box's longest side is a random `fill` of the frame,
        centred, then shifted by a jitter that keeps the whole object inside."""
        unit = torch.cat([torch.ones(1), torch.zeros(2), quaternion])[None]
        xy = WeakPerspectiveCamera.from_tensor(unit).project(vertices[None])[0]
        low, high = xy.min(0).values, xy.max(0).values
        fill = rng.uniform(*self.cfg.fill)
        scale = 2 * fill / float((high - low).max())
        centre = (low + high) / 2 * scale
        half_extent = (high - low) / 2 * scale
        room = (1 - half_extent).clamp(min=0).minimum(torch.full((2,), self.cfg.translation_jitter))
        shift = torch.from_numpy(rng.uniform(-1, 1, 2)).float() * room
        # `centre` is in NDC (y already flipped); NDC x = c_x + tx and NDC y = c_y - ty put it at `shift`.
        translation = torch.stack([shift[0] - centre[0], centre[1] - shift[1]])
        return torch.cat([torch.tensor([scale]), translation, quaternion]).float()

    def _occlude(self, image: torch.Tensor, full_mask: torch.Tensor, rng: np.random.Generator,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        rows, cols = torch.nonzero(full_mask, as_tuple=True)
        size = self.cfg.image_size
        width = rng.uniform(*self.cfg.occluder_width)
        for _ in range(20):
            k = int(rng.integers(rows.numel()))
            through = ((2 * float(cols[k]) + 1) / size - 1, 1 - (2 * float(rows[k]) + 1) / size)
            color, coverage = branch_occluder(size, gen, through, width)
            visible = full_mask & ~coverage
            if visible.sum() >= self.cfg.min_visible * full_mask.sum():
                return torch.where(coverage, color, image), visible
            width *= 0.8  # too much hidden: thinner next time
        log.warning("no occluder placement left %.0f%% visible; this image stays unoccluded",
                    100 * self.cfg.min_visible)
        return image, full_mask


# -- writing a split ----------------------------------------------------------------------------------

def sample_id(split: str, index: int) -> str:
    return f"{split}_{index:05d}"


def write_sample(root: Path, stem: str, sample: SyntheticSample, image_format: str = "png") -> dict:
    """Write one sample's files (ground truth last, so that its presence marks a finished sample);
    returns its annotation."""
    save_image(root / "images" / f"{stem}.{image_format}", sample.image)
    save_image(root / "masks" / f"{stem}.png", sample.visible_mask.astype(np.uint8) * 255)
    save_image(root / "gt" / f"{stem}_texture.png", ((sample.texture + 1) / 2).permute(1, 2, 0).numpy())
    annotation = {"class_id": sample.class_id, "camera": sample.pixel_camera().to_dict(), "bbox": sample.bbox()}
    save_npz(root / "gt" / f"{stem}.npz", class_id=sample.class_id, camera_ndc=sample.camera_ndc.numpy(),
             vertices=sample.vertices.numpy(), deformation_map=sample.deformation_map.numpy(),
             full_mask=sample.full_mask, occluded=sample.occluded, bbox=np.asarray(annotation["bbox"]),
             annotation=json_text(annotation))
    return annotation


def _finished_annotation(root: Path, stem: str, image_format: str) -> Optional[dict]:
    gt_path = root / "gt" / f"{stem}.npz"
    if not (gt_path.is_file() and (root / "images" / f"{stem}.{image_format}").is_file()):
        return None
    try:
        with np.load(gt_path) as gt:
            return json.loads(str(gt["annotation"]))
    except (OSError, ValueError, KeyError):
        return None  # a damaged file: make the sample again


def write_split(cfg: SyntheticConfig, split: str, count: int, generator: Optional[SyntheticGenerator] = None,
                resume: bool = True) -> Path:
    """Generate and write `count` samples of `split` under <out_dir>/<split>; samples already on
    disk are kept (resume=True), so an interrupted run continues where it stopped."""
    generator = generator or SyntheticGenerator(cfg)
    root = Path(cfg.out_dir) / split
    annotations = {}
    made = 0
    for index in tqdm(range(count), desc=f"synthetic {split}", unit="img"):
        stem = sample_id(split, index)
        annotation = _finished_annotation(root, stem, cfg.image_format) if resume else None
        if annotation is None:
            annotation = write_sample(root, stem, generator.make(split, index), cfg.image_format)
            made += 1
        annotations[stem] = annotation
    save_json(root / "annotations.json", annotations)
    log.info("%s: %d samples (%d new)", root, count, made)
    return root


def write_splits(cfg: SyntheticConfig, generator: Optional[SyntheticGenerator] = None) -> dict:
    """Write every split of cfg.splits (write_split: finished samples are kept). Returns a summary:
    per split its image count and seconds, the number of classes and the species' names."""
    generator = generator or SyntheticGenerator(cfg)
    timings = {}
    for split, count in cfg.splits.items():
        start = time.perf_counter()
        write_split(cfg, split, int(count), generator)
        timings[split] = {"images": int(count), "seconds": round(time.perf_counter() - start, 1)}
    return {"splits": timings, "classes": cfg.n_classes, "species": [s.name for s in generator.species]}


def contact_sheet_split(cfg: SyntheticConfig) -> str:
    """The split the contact sheet shows: test when written, else the first one."""
    return "test" if "test" in cfg.splits else next(iter(cfg.splits))


# -- showing it ---------------------------------------------------------------------------------------

def contact_sheet(generator: SyntheticGenerator, split: str, rows: int, azimuths=(0, 90, 180, 270),
                  image_size: int = 128) -> torch.Tensor:
    """Images for a PNG grid, `rows` samples of `split`, one row each: the photo, the visible mask,
    the full mask, and ground-truth turntable views. Returns (rows * columns, 3, S, S) in [-1, 1]."""
    from ..render.views import render_turntable

    renderer = make_renderer(image_size)
    tiles = []
    for index in range(rows):
        sample = generator.make(split, index)
        photo = torch.from_numpy(sample.image).permute(2, 0, 1) * 2 - 1
        masks = [torch.from_numpy(m).float()[None].expand(3, -1, -1) * 2 - 1
                 for m in (sample.visible_mask, sample.full_mask)]
        row = torch.stack([photo, *masks])
        row = F.interpolate(row, size=(image_size, image_size), mode="area")
        with torch.no_grad():
            views, _ = render_turntable(generator.template, renderer, sample.vertices, sample.texture, list(azimuths))
        tiles.append(torch.cat([row, views]))
    return torch.cat(tiles)
