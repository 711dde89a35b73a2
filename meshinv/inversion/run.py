"""The batch job behind scripts/invert.py: every image of a dataset, B at a time, resumable.

Finished images (OUT/<id>/result.pt present) are skipped, so re-running a killed job loses at most
the batch in flight. An image that cannot be used (unreadable, no or empty mask, no camera) is
recorded in OUT/summary.json with its reason and the job goes on; failures are retried on a re-run.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Protocol

import numpy as np
import torch
from tqdm import tqdm

from ..data.sample import DataError, Sample
from ..geometry.template import MeshTemplate
from ..render.renderer import MeshRenderer
from ..render.views import render_turntable
from ..utils.images import to_numpy_image
from ..utils.io import atomic_write, save_image, save_json
from .camera_init import CameraInitializer
from .config import InversionConfig
from .engine import BatchResult, Inverter
from .results import RESULT_FILE, InversionRecord, finished_ids, load_record

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"


class ImageDataset(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> Sample: ...
    def image_ids(self) -> list[str]: ...


# A camera predictor maps a batch of crops (B, 3, S, S) in [-1, 1] to cameras (B, 7).
CameraPredictor = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class PreparedSample:
    sample: Sample
    camera: torch.Tensor
    camera_source: str


def save_gif(path: str | os.PathLike, frames: torch.Tensor, ms_per_frame: int) -> None:
    """Frames (N, 3, H, W) in [-1, 1] as a looping GIF (atomically)."""
    from PIL import Image

    images = [Image.fromarray((to_numpy_image(f) * 255 + 0.5).astype(np.uint8)) for f in frames]
    with atomic_write(path, "wb") as f:
        images[0].save(f, format="GIF", save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0)


def overlay(render: torch.Tensor, render_mask: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """The rendering where it covers the image, the input (dimmed) elsewhere; all (3, S, S) in [-1, 1]."""
    dimmed = (image + 1) * 0.6 - 1
    return torch.where(render_mask > 0.5, render, dimmed)


class ResultWriter:
    """Writes one image's outputs into OUT/<id>/, result.pt last."""

    def __init__(self, template: MeshTemplate, cfg: InversionConfig):
        self.template = template
        self.cfg = cfg
        self.turntable_renderer = MeshRenderer(cfg.export.turntable_size)

    def write(self, folder: Path, record: InversionRecord, prepared: PreparedSample, render: torch.Tensor,
              render_mask: torch.Tensor) -> None:
        sample = prepared.sample
        save_image(folder / "input.png", to_numpy_image(sample.image))
        save_image(folder / "target_mask.png", to_numpy_image(sample.mask * 2 - 1))
        save_image(folder / "render.png", to_numpy_image(overlay(render, render_mask, sample.image)))
        save_image(folder / "pred_mask.png", to_numpy_image(render_mask * 2 - 1))
        export = self.cfg.export
        if export.mesh:
            self.template.export(folder / "mesh.obj", record.vertices, record.texture)
        if export.turntable_frames > 0:
            azimuths = np.linspace(0.0, 360.0, export.turntable_frames, endpoint=False).tolist()
            with torch.no_grad():
                frames, _ = render_turntable(self.template, self.turntable_renderer, record.vertices.float(),
                                             record.texture.float(), azimuths)
            save_gif(folder / "turntable.gif", frames, export.turntable_ms_per_frame)
        record.save(folder / RESULT_FILE)


class InversionRun:
    """Inverts the images of a dataset into OUT; see the module doc.

    Args:
        inverter: the engine (generator, template, config, device).
        dataset: yields Samples cropped at the inversion's working resolution.
        out_dir: OUT.
        camera_predictor: optional, used for every image when given (before the other sources).
        checkpoint: recorded in the summary.
    """

    def __init__(self, inverter: Inverter, dataset: ImageDataset, out_dir: str | os.PathLike,
                 camera_predictor: Optional[CameraPredictor] = None, checkpoint: str = ""):
        self.inverter = inverter
        self.cfg = inverter.cfg
        self.dataset = dataset
        self.out_dir = Path(out_dir)
        self.camera_predictor = camera_predictor
        self.camera_init = CameraInitializer(self.cfg.camera_init, self.cfg.seed)
        self.writer = ResultWriter(inverter.template, self.cfg)
        self.checkpoint = checkpoint
        self.entries: dict[str, dict] = {}
        self.tensorboard = None
        # What was inverted: `images` (raw photos) overrides `data` in the config.
        self.data_name = str(getattr(dataset, "root", self.cfg.images or self.cfg.data))

    # -- which images --------------------------------------------------------------------------------
    def selected_indices(self) -> list[int]:
        ids = self.dataset.image_ids()
        wanted = set(self.cfg.image_ids)
        unknown = wanted - set(ids)
        if unknown:
            raise DataError(f"{self.data_name}: no images with ids {sorted(unknown)}")
        indices = [i for i, image_id in enumerate(ids) if not wanted or image_id in wanted]
        return indices[: self.cfg.limit] if self.cfg.limit is not None else indices

    def _fail(self, image_id: str, reason: str) -> None:
        log.warning("image %s failed: %s", image_id, reason)
        self.entries[image_id] = {"status": "failed", "reason": reason}

    def _prepare(self, index: int, image_id: str) -> Optional[PreparedSample]:
        try:
            sample = self.dataset[index]
            size = self.cfg.crop.img_size
            if sample.image.shape[-2:] != (size, size):
                raise DataError(f"{sample.source}: the dataset gives {tuple(sample.image.shape[-2:])} crops but "
                                f"inversion.crop.img_size is {size}")
            if not torch.isfinite(sample.image).all():
                raise DataError(f"{sample.source}: the image has NaN or infinite values")
            if sample.mask.sum() == 0:
                raise DataError(f"{sample.source}: the mask is empty after cropping")
            if self.camera_predictor is not None:
                return PreparedSample(sample, torch.zeros(7), "predictor")  # filled per batch
            camera, source = self.camera_init(sample)
            return PreparedSample(sample, camera, source)
        except (DataError, OSError, ValueError) as err:
            self._fail(image_id, str(err))
            return None

    # -- the job -------------------------------------------------------------------------------------
    def _invert_batch(self, batch: list[PreparedSample]) -> BatchResult:
        images = torch.stack([p.sample.image for p in batch])
        masks = torch.stack([p.sample.mask for p in batch])
        if self.camera_predictor is not None:
            with torch.no_grad():
                predicted = self.camera_predictor(images.to(self.inverter.device), masks.to(self.inverter.device)).cpu()
            for p, camera in zip(batch, predicted):
                p.camera = camera
        cameras = torch.stack([p.camera for p in batch])
        class_ids = torch.tensor([p.sample.class_id for p in batch])
        ids = [p.sample.image_id for p in batch]
        on_step = None
        if self.tensorboard is not None:
            def on_step(step, out):
                for name, value in {**out.terms, "total": out.total}.items():
                    for image_id, v in zip(ids, value.detach().tolist()):
                        self.tensorboard.add_scalar(f"{image_id}/{name}", v, step)
        return self.inverter.invert(images, masks, cameras, class_ids, ids, on_step=on_step)

    def _save_batch(self, batch: list[PreparedSample], result: BatchResult) -> None:
        seconds = result.seconds / len(batch)
        for i, prepared in enumerate(batch):
            sample = prepared.sample
            record = InversionRecord(
                image_id=sample.image_id, z=result.z[i], camera=result.camera[i], camera_init=result.camera_init[i],
                class_id=int(result.class_ids[i]), texture=result.texture[i], mesh_map=result.mesh_map[i],
                vertices=result.vertices[i], image_size=self.cfg.crop.img_size, iou=float(result.iou[i]),
                losses=result.losses[i], init_loss=float(result.init_loss[i]), seconds=seconds, source=sample.source,
            )
            self.writer.write(self.out_dir / sample.image_id, record, prepared, result.render[i], result.render_mask[i])
            self.entries[sample.image_id] = self._entry(record, prepared.camera_source)

    @staticmethod
    def _entry(record: InversionRecord, camera_source: str = "") -> dict:
        entry = {"status": "done", "iou": record.iou, "loss": record.losses.get("total"), "seconds": record.seconds}
        if camera_source:
            entry["camera_init"] = camera_source
        return entry

    def write_summary(self) -> dict:
        done = {k: v for k, v in self.entries.items() if v["status"] == "done"}
        failed = {k: v for k, v in self.entries.items() if v["status"] == "failed"}
        ious = [v["iou"] for v in done.values()]
        seconds = [v["seconds"] for v in done.values() if v.get("seconds") == v.get("seconds")]
        summary = {
            "data": self.data_name, "checkpoint": self.checkpoint, "image_size": self.cfg.crop.img_size,
            "done": len(done), "failed": len(failed),
            "mean_iou": float(np.mean(ious)) if ious else None,
            "seconds_per_image": float(np.mean(seconds)) if seconds else None,
            "images": dict(sorted(self.entries.items())),
        }
        save_json(self.out_dir / SUMMARY_FILE, summary)
        return summary

    def run(self, progress: bool = True) -> dict:
        """Invert every selected image that has no result yet; returns the summary (also written)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        indices = self.selected_indices()
        ids = self.dataset.image_ids()
        finished = finished_ids(self.out_dir)
        pending = [i for i in indices if ids[i] not in finished]
        for i in indices:
            if ids[i] in finished:
                try:
                    self.entries[ids[i]] = self._entry(load_record(self.out_dir / ids[i]))
                except (OSError, ValueError, RuntimeError) as err:  # damaged: do it again
                    log.warning("%s: unreadable result (%s); inverting it again", ids[i], err)
                    pending.append(i)
        pending.sort()
        log.info("%d images selected: %d already done, %d to invert", len(indices), len(indices) - len(pending),
                 len(pending))
        if self.cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.tensorboard = SummaryWriter(str(self.out_dir / "tensorboard"))
        bar = tqdm(total=len(pending), desc="invert", unit="img", disable=not progress)
        started = time.perf_counter()
        done_now = 0
        position = 0
        try:
            while position < len(pending):
                batch: list[PreparedSample] = []
                while position < len(pending) and len(batch) < self.cfg.batch_size:
                    index = pending[position]
                    position += 1
                    prepared = self._prepare(index, ids[index])
                    if prepared is None:
                        bar.update(1)
                    else:
                        batch.append(prepared)
                if batch:
                    try:
                        result = self._invert_batch(batch)
                    except (DataError, ValueError, RuntimeError) as err:
                        if len(batch) == 1:
                            self._fail(batch[0].sample.image_id, f"inversion failed: {err}")
                        else:  # find the culprit: one image at a time
                            log.warning("batch failed (%s); retrying its images one by one", err)
                            for prepared in batch:
                                try:
                                    self._save_batch([prepared], self._invert_batch([prepared]))
                                except (DataError, ValueError, RuntimeError) as single_err:
                                    self._fail(prepared.sample.image_id, f"inversion failed: {single_err}")
                    else:
                        self._save_batch(batch, result)
                    done_now += len(batch)
                    bar.update(len(batch))
                ious = [v["iou"] for v in self.entries.values() if v["status"] == "done"]
                minutes = (time.perf_counter() - started) / 60
                bar.set_postfix(mean_iou=f"{np.mean(ious):.3f}" if ious else "-",
                                img_per_min=f"{done_now / minutes:.2f}" if minutes > 0 else "-")
                self.write_summary()
        finally:
            bar.close()
            if self.tensorboard is not None:
                self.tensorboard.close()
        summary = self.write_summary()
        log.info("inversion: %d done, %d failed, mean IoU %s -> %s", summary["done"], summary["failed"],
                 f"{summary['mean_iou']:.4f}" if summary["mean_iou"] is not None else "n/a", self.out_dir)
        return summary
