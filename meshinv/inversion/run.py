"""The batch job behind scripts/invert.py: every image of a dataset, B at a time, resumable.

Finished images (OUT/<id>/result.pt present) are skipped, so re-running a killed job loses at most
the batch in flight. Any failure of one image (unreadable, too large, no or empty mask, no usable
camera, an id that cannot name a folder, an error in its optimisation, a result that is not finite)
is recorded in OUT/summary.json with its reason and the job goes on; failures are retried on a
re-run. When a batch fails, its images are retried one by one, so one bad image does not fail its
batch-mates. A failure that belongs to no one image (an interrupt, a write into OUT that fails)
stops the job, after writing the summary. summary.json accounts for every result in OUT and every
recorded failure, not only this run's images.

Under torchrun the processes share the images out (run_job, InversionRun._run): each writes its own
result folders and summary part (OUT/summary.rank<k>.json), merged into summary.json at the end, or
by the next run when the job was killed.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Protocol

import numpy as np
import torch
from tqdm import tqdm

from ..data.datasets import dataset_root, open_dataset
from ..data.folder import FolderDataset
from ..data.sample import DataError, Sample
from ..data.segment import MASKRCNN_WEIGHTS, SegmentConfig, segment_missing
from ..geometry.template import MeshTemplate, build_template
from ..losses.vgg import VGGFeatures
from ..models import CheckpointError, load_generator
from ..models.camera import load_camera_predictor
from ..render.settings import make_renderer
from ..render.views import render_turntable
from ..utils.config import ConfigError, save_config, to_dict
from ..utils.device import resolve_device
from ..utils.distributed import (
    SINGLE_PROCESS, DistributedContext, gather_on_main, init_distributed, launched_local_rank, local_device,
    run_on_main, shutdown,
)
from ..utils.errors import error_reason
from ..utils.images import to_numpy_image
from ..utils.io import atomic_write, save_image, save_json
from ..utils.weights import MissingWeightsError, resolve_weights
from .camera_init import CameraInitializer, NoStartCamera, resolve_predictions_path
from .config import ExportConfig, InversionConfig, InversionJob, validate_inversion
from .engine import BatchResult, Inverter, camera_problem
from .objective import load_feature_vgg
from .output import MASK_CACHE, SUMMARY_FILE, TENSORBOARD, OutputFolder, OutputFolderError, rank_file
from .results import RESULT_FILE, RUN_CONFIG_FILE, InversionRecord, load_record

log = logging.getLogger(__name__)


class ImageDataset(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> Sample: ...
    def image_ids(self) -> list[str]: ...


# A camera predictor maps a batch of crops (B, 3, S, S) in [-1, 1] to cameras (B, 7).
CameraPredictor = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class PreparedSample:
    sample: Sample
    camera: Optional[torch.Tensor]        # None until the predictor or the search gives one
    camera_source: str
    camera_score: float = math.nan        # the camera search's joint score
    camera_seconds: float = 0.0           # its share of the time spent finding batch cameras


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

    def __init__(self, template: MeshTemplate, export: ExportConfig):
        self.template = template
        self.export = export
        self.turntable_renderer = make_renderer(export.turntable_render_settings)

    def write(self, folder: Path, record: InversionRecord, prepared: PreparedSample, render: torch.Tensor,
              render_mask: torch.Tensor) -> None:
        sample = prepared.sample
        save_image(folder / "input.png", to_numpy_image(sample.image))
        save_image(folder / "target_mask.png", to_numpy_image(sample.mask * 2 - 1))
        save_image(folder / "render.png", to_numpy_image(overlay(render, render_mask, sample.image)))
        save_image(folder / "pred_mask.png", to_numpy_image(render_mask * 2 - 1))
        export = self.export
        if export.mesh:
            self.template.export(folder / "mesh.obj", record.vertices, record.texture)
        if export.turntable_frames > 0:
            azimuths = np.linspace(0.0, 360.0, export.turntable_frames, endpoint=False).tolist()
            with torch.no_grad():
                frames, _ = render_turntable(self.template, self.turntable_renderer, record.vertices.float(),
                                             record.texture.float(), azimuths)
            save_gif(folder / "turntable.gif", frames, export.turntable_ms_per_frame)
        record.save(folder / RESULT_FILE)

    def try_write(self, folder: Path, record: InversionRecord, prepared: PreparedSample, render: torch.Tensor,
                  render_mask: torch.Tensor) -> Optional[str]:
        """write(), or why this image's outputs could not be made. An OSError (disk full,
        permissions) is the folder's, not the image's: it is raised."""
        try:
            self.write(folder, record, prepared, render, render_mask)
        except OSError:
            raise
        except Exception as err:  # noqa: BLE001 -- one image's outputs could not be made
            return f"writing the results failed: {error_reason(err)}"
        return None


def read_sample(dataset: ImageDataset, index: int, image_size: int) -> Sample:
    """Sample `index` of the dataset as the inversion takes it (cropped at the working resolution
    `image_size`); a DataError naming the image when it cannot be used (wrong size, non-finite
    values, a mask empty after cropping)."""
    sample = dataset[index]
    if sample.image.shape[-2:] != (image_size, image_size):
        raise DataError(f"{sample.source}: the dataset gives {tuple(sample.image.shape[-2:])} crops but "
                        f"inversion.crop.img_size is {image_size}")
    if not torch.isfinite(sample.image).all():
        raise DataError(f"{sample.source}: the image has NaN or infinite values")
    if sample.mask.sum() == 0:
        raise DataError(f"{sample.source}: the mask is empty after cropping")
    return sample


def summary_entry(record: InversionRecord) -> dict:
    """One finished image's line in summary.json."""
    entry = {"status": "done", "iou": record.iou, "loss": record.losses.get("total"), "seconds": record.seconds}
    if record.camera_source:
        entry["camera_init"] = record.camera_source
    if math.isfinite(record.camera_init_score):
        entry["camera_init_score"] = record.camera_init_score
    return entry


def summary_of(entries: dict[str, dict], data: str, checkpoint: str, image_size: int, left_out: dict,
               random_weights: dict) -> dict:
    """summary.json's content: the account of every image's entry (summary_entry, or a failure's
    {status: failed, reason})."""
    done = {k: v for k, v in entries.items() if v["status"] == "done"}
    failed = {k: v for k, v in entries.items() if v["status"] == "failed"}
    ious = [v["iou"] for v in done.values()]
    # (a summary on disk holds null for a time that was not measured)
    seconds = [v["seconds"] for v in done.values() if isinstance(v.get("seconds"), float)
               and math.isfinite(v["seconds"])]
    return {
        "data": data, "checkpoint": checkpoint, "image_size": image_size,
        "done": len(done), "failed": len(failed),
        "mean_iou": float(np.mean(ious)) if ious else None,
        "seconds_per_image": float(np.mean(seconds)) if seconds else None,
        # what this loss differs from the paper's by: {term: why}
        "left_out": left_out, "random_weights": random_weights,
        "images": dict(sorted(entries.items())),
    }


class MissingInputsError(FileNotFoundError):
    """What a job needs and does not have, every piece at once (raised before any work)."""


@dataclass
class JobInputs:
    """What check_job_inputs found: the dataset and the files the job will use."""

    dataset: ImageDataset
    checkpoint: Path                     # the generator checkpoint
    predictions: Optional[Path]          # inversion.camera_init.predictions, resolved
    without_masks: list[str]             # ids of photos that need automatic masks
    can_segment: bool                    # whether the segmenter's weights are there
    vgg: Optional[VGGFeatures] = None    # the feature term's network, loaded (weights fetched) up front
    left_out: dict[str, str] = field(default_factory=dict)  # terms left out for lack of weights, with why


def open_job_dataset(inv: InversionJob, crop, out: OutputFolder) -> ImageDataset:
    """The dataset to invert. Raw photos (inversion.images, or auto_masks) are read as a folder whose
    missing masks come from OUT/masks (meshinv.data.segment.segment_missing fills it)."""
    if not (inv.images or inv.auto_masks):
        return open_dataset(inv.data, crop, split=inv.split, **inv.data_options)
    return FolderDataset(inv.data_root, crop, mask_dirs=[out.path / MASK_CACHE])


def _segmenter_weights(segment: SegmentConfig) -> Optional[str]:
    if segment.allow_random_weights:
        return None
    if segment.backend == "pointrend":
        return segment.pointrend_weights or "segment.pointrend_weights (not set)"
    return segment.weights or MASKRCNN_WEIGHTS


def check_job_inputs(inv: InversionConfig, segment: SegmentConfig, out: OutputFolder) -> JobInputs:
    """Everything the job needs, checked before any expensive work: the dataset, the generator
    checkpoint, VGG-19 weights (when the feature loss is on: fetched now if they can be, so that a
    first run downloads them before any work; under `loss.on_missing_vgg: skip` unavailable weights
    leave the term out instead, recorded in `left_out`), the camera predictor or predictions file,
    and the segmenter's weights when photos lack masks. Raises MissingInputsError listing every
    missing piece. Photos without masks when the segmenter is missing are not an error while
    other photos have masks: those go through, the others are reported per photo."""
    missing: list[str] = []

    def look(check, *args):
        try:
            return check(*args)
        except (MissingWeightsError, DataError, FileNotFoundError) as err:
            missing.append(str(err))
            return None

    dataset = look(open_job_dataset, inv, inv.crop, out)
    checkpoint = look(resolve_weights, inv.checkpoint, "generator checkpoint (inversion.checkpoint)")
    vgg, left_out = None, {}
    if inv.loss.feature_weight > 0:
        vgg, why = look(load_feature_vgg, inv.loss) or (None, None)
        if why is not None:
            left_out["feature"] = why
    if inv.camera_init.predictor:
        look(resolve_weights, inv.camera_init.predictor, "camera predictor (inversion.camera_init.predictor)")
    predictions = None
    if inv.camera_init.predictions:
        predictions = look(resolve_predictions_path, inv.camera_init.predictions, dataset_root(inv.data_root))
    without_masks: list[str] = []
    can_segment = True
    if isinstance(dataset, FolderDataset) and (inv.images or inv.auto_masks):
        for path in dataset.image_paths:
            try:
                dataset.mask_path(path.stem)
            except DataError:
                without_masks.append(path.stem)
        weights = _segmenter_weights(segment) if without_masks else None
        if weights is not None:
            try:
                resolve_weights(weights, f"{segment.backend} weights for automatic masks (segment section)")
            except MissingWeightsError as err:
                can_segment = False
                if len(without_masks) == len(dataset.image_paths):
                    missing.append(f"{err}\n(none of the {len(without_masks)} photos has a mask of its own in "
                                   f"{dataset.root / 'masks'})")
                else:
                    log.warning("%d of %d photos have no mask and the segmenter's weights are missing: they will "
                                "be reported as failed, the others inverted (%s)", len(without_masks),
                                len(dataset.image_paths), err)
    if missing:
        raise MissingInputsError("this run cannot start; missing:\n- " + "\n- ".join(missing))
    return JobInputs(dataset, checkpoint, predictions, without_masks, can_segment, vgg, left_out)


def dataset_name(dataset: ImageDataset, job: InversionJob) -> str:
    """How messages and summaries name a job's dataset: its root folder, else the job's data root."""
    return str(getattr(dataset, "root", job.data_root))


def selected_indices(dataset: ImageDataset, job: InversionJob) -> list[int]:
    """The dataset indices a job works on: its image_ids (all when empty), then its first `limit`;
    a DataError naming the ids the dataset lacks."""
    ids = dataset.image_ids()
    wanted = set(job.image_ids)
    unknown = wanted - set(ids)
    if unknown:
        raise DataError(f"{dataset_name(dataset, job)}: no images with ids {sorted(unknown)}")
    indices = [i for i, image_id in enumerate(ids) if not wanted or image_id in wanted]
    return indices[: job.limit] if job.limit is not None else indices


class InversionRun:
    """Inverts the images of a dataset into the job's output folder; see the module doc.

    Args:
        inverter: the engine (generator, template, algorithm, device).
        dataset: yields Samples cropped at the inversion's working resolution.
        job: which images (limit, image_ids), batch size, exports, out_dir, checkpoint (recorded).
        camera_predictor: optional, used for every image when given (before the other sources).
        output: the OutputFolder of job.out_dir when the caller holds its lock already.
        context: this process's place in a torchrun job: it inverts every world_size-th image still
            to do, starting at its rank (see `_run`).
    """

    def __init__(self, inverter: Inverter, dataset: ImageDataset, job: InversionJob,
                 camera_predictor: Optional[CameraPredictor] = None, output: Optional[OutputFolder] = None,
                 context: DistributedContext = SINGLE_PROCESS):
        self.inverter = inverter
        self.job = job.job
        self.image_size = inverter.cfg.crop.img_size
        self.dataset = dataset
        self.output = output or OutputFolder(job.out_dir)
        self.camera_predictor = camera_predictor
        self.camera_init = CameraInitializer(inverter.cfg.camera_init, inverter.cfg.seed)
        self.searches = inverter.cfg.camera_init.search.enabled
        self.writer = ResultWriter(inverter.template, self.job.export)
        self.entries: dict[str, dict] = {}
        self.tensorboard = None
        self.data_name = dataset_name(dataset, self.job)
        self.context = context
        # Under torchrun each rank accounts for its own images in a part of the summary while it runs.
        self.account_path = self.output.path / (rank_file(SUMMARY_FILE, context.rank) if context.enabled
                                                else SUMMARY_FILE)

    # -- which images --------------------------------------------------------------------------------
    def selected_indices(self) -> list[int]:
        return selected_indices(self.dataset, self.job)

    def _fail(self, image_id: str, reason: str) -> None:
        log.warning("image %s failed: %s", image_id, reason)
        self.entries[image_id] = {"status": "failed", "reason": reason}

    def _prepare(self, index: int, image_id: str) -> Optional[PreparedSample]:
        try:
            self.output.result_folder(image_id)  # refuses an id that cannot name a folder in OUT
            sample = read_sample(self.dataset, index, self.image_size)
            if self.camera_predictor is not None:
                return PreparedSample(sample, None, "predictor")  # filled per batch
            try:
                camera, source = self.camera_init(sample)
            except NoStartCamera:
                if not self.searches:
                    raise
                return PreparedSample(sample, None, "")  # the search alone
            problem = camera_problem(camera)
            if problem is not None:
                raise DataError(f"{sample.source}: no usable starting camera ({source}): {problem}")
            return PreparedSample(sample, camera, source)
        except Exception as err:  # noqa: BLE001 -- whatever goes wrong with one image is recorded against it
            self._fail(image_id, error_reason(err))
            return None

    # -- the job -------------------------------------------------------------------------------------
    def _predict_cameras(self, batch: list[PreparedSample]) -> list[PreparedSample]:
        """The batch with the predictor's cameras; images whose prediction is unusable fail."""
        images = torch.stack([p.sample.image for p in batch]).to(self.inverter.device)
        masks = torch.stack([p.sample.mask for p in batch]).to(self.inverter.device)
        with torch.no_grad():
            predict = (self.camera_predictor.mirror_averaged if self.inverter.cfg.camera_init.mirror_average
                       else self.camera_predictor)
            predicted = predict(images, masks).cpu()
        usable = []
        for p, camera in zip(batch, predicted):
            problem = camera_problem(camera)
            if problem is None:
                p.camera = camera
                usable.append(p)
            else:
                self._fail(p.sample.image_id, f"the camera predictor gave an unusable camera: {problem}")
        return usable

    def _search_cameras(self, batch: list[PreparedSample]) -> list[PreparedSample]:
        """The batch with searched cameras (each start camera competing); unusable ones fail."""
        starts = torch.stack([p.camera.float() if p.camera is not None else torch.full((7,), math.nan)
                              for p in batch])
        found = self.inverter.search_cameras(
            torch.stack([p.sample.image for p in batch]), torch.stack([p.sample.mask for p in batch]),
            torch.tensor([p.sample.class_id for p in batch]), [p.sample.image_id for p in batch],
            starts, [p.camera_source for p in batch])
        usable = []
        for i, p in enumerate(batch):
            problem = camera_problem(found.cameras[i])
            if problem is not None:
                self._fail(p.sample.image_id, f"the camera search gave an unusable camera: {problem}")
                continue
            p.camera, p.camera_source, p.camera_score = found.cameras[i].float(), found.sources[i], float(found.scores[i])
            usable.append(p)
        return usable

    def _with_cameras(self, batch: list[PreparedSample], find, what: str) -> Optional[list[PreparedSample]]:
        """find(batch) -> the batch with cameras; a batch that fails is retried image by image (None
        returned: done here), a single image's failure recorded."""
        start = time.perf_counter()
        try:
            found = find(batch)
            for prepared in found:
                prepared.camera_seconds += (time.perf_counter() - start) / len(batch)
            return found
        except Exception as err:  # noqa: BLE001 -- retried one by one below
            if len(batch) > 1:
                log.warning("%s failed for a batch (%s); retrying its images one by one", what, err)
                for prepared in batch:
                    self._invert_and_save([prepared])
            else:
                self._fail(batch[0].sample.image_id, f"{what} failed: {error_reason(err)}")
            return None

    def _invert_batch(self, batch: list[PreparedSample]) -> BatchResult:
        images = torch.stack([p.sample.image for p in batch])
        masks = torch.stack([p.sample.mask for p in batch])
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
        """Write each image's results; a non-finite result is a failure and writes nothing. An
        OSError while writing (disk full, permissions) is the folder's, not the image's: it stops
        the job."""
        seconds = result.seconds / len(batch)
        for i, prepared in enumerate(batch):
            sample = prepared.sample
            problem = result.non_finite(i)
            if problem is not None:
                self._fail(sample.image_id, problem)
                continue
            record = InversionRecord(
                image_id=sample.image_id, z=result.z[i], camera=result.camera[i], camera_init=result.camera_init[i],
                class_id=int(result.class_ids[i]), texture=result.texture[i], mesh_map=result.mesh_map[i],
                vertices=result.vertices[i], image_size=self.image_size, iou=float(result.iou[i]),
                losses=result.losses[i], init_loss=float(result.init_loss[i]),
                seconds=seconds + prepared.camera_seconds, source=sample.source,
                camera_source=prepared.camera_source, camera_init_score=prepared.camera_score,
                crop=to_dict(self.inverter.cfg.crop), refine=result.refine[i] if result.refine else {},
            )
            problem = self.writer.try_write(self.output.result_folder(sample.image_id), record, prepared,
                                            result.render[i], result.render_mask[i])
            if problem is not None:
                self._fail(sample.image_id, problem)
                continue
            self.entries[sample.image_id] = summary_entry(record)

    def _invert_and_save(self, batch: list[PreparedSample]) -> None:
        if self.camera_predictor is not None and any(p.camera is None for p in batch):
            batch = self._with_cameras(batch, self._predict_cameras, "camera prediction")
        if batch and self.searches and any(math.isnan(p.camera_score) for p in batch):
            batch = self._with_cameras(batch, self._search_cameras, "camera search")
        if not batch:
            return
        try:
            result = self._invert_batch(batch)
        except Exception as err:  # noqa: BLE001 -- recorded against the image, or narrowed down below
            if len(batch) == 1:
                self._fail(batch[0].sample.image_id, f"inversion failed: {error_reason(err)}")
                return
            log.warning("a batch failed (%s); retrying its images one by one", error_reason(err))
            for prepared in batch:
                self._invert_and_save([prepared])
            return
        self._save_batch(batch, result)

    def _previous_entries(self, selected: set[str]) -> dict[str, dict]:
        """Every image already accounted for in OUT: the previous summary's failures, and an entry per
        finished result (read from the previous summary, or from the result itself when it is
        selected now or the summary lacks it). A damaged result that is not selected is a failure.
        The summary parts of a sharded run (every rank's, or those a killed one left) are newer than
        summary.json, and count over it."""
        previous = {}
        for path in [self.output.path / SUMMARY_FILE, *self.output.part_files(SUMMARY_FILE)]:
            try:
                images = json.loads(path.read_text()).get("images", {}) if path.is_file() else {}
                previous.update(images)
            except (OSError, ValueError, AttributeError, TypeError) as err:
                log.warning("%s is unreadable (%s); it is rebuilt from the results in the folder", path, err)
        finished = self.output.finished_ids()
        entries = {k: v for k, v in previous.items() if isinstance(v, dict) and v.get("status") == "failed"
                   and k not in finished}
        for image_id in sorted(finished):
            known = previous.get(image_id)
            if image_id not in selected and isinstance(known, dict) and known.get("status") == "done":
                entries[image_id] = known
                continue
            try:
                entries[image_id] = summary_entry(load_record(self.output.path / image_id))
            except Exception as err:  # noqa: BLE001 -- damaged: redone when selected
                entries[image_id] = {"status": "failed", "reason": f"damaged result ({error_reason(err)})",
                                     "damaged": True}
        return entries

    def write_summary(self, path: Optional[Path] = None) -> dict:
        """The account of self.entries, written to `path` (default: summary.json, or this rank's part
        of it under torchrun)."""
        summary = summary_of(self.entries, self.data_name, self.job.checkpoint, self.image_size,
                             self.inverter.left_out, self.inverter.random_weights)
        save_json(path or self.account_path, summary)
        return summary

    def _fold_parts(self) -> dict:
        """summary.json from self.entries, which hold the summary parts' accounts; then the parts go."""
        summary = self.write_summary(self.output.path / SUMMARY_FILE)
        for part in self.output.part_files(SUMMARY_FILE):
            part.unlink(missing_ok=True)
        return summary

    def run(self, progress: bool = True) -> dict:
        """Invert every selected image that has no result yet; returns the summary (also written).
        Holds the output folder's lock throughout (takes it unless the caller holds it)."""
        if self.output.is_locked:
            return self._run(progress)
        with self.output.locked(self.context):
            run_on_main(self.context, self.output.remove_stale_temp_files)
            return self._run(progress)

    def _take_account(self) -> list[int]:
        """(rank 0 alone under torchrun) self.entries from OUT, and the indices of the selected images
        still to invert. The summary parts a killed sharded run left are folded into summary.json
        now, before this run's ranks write theirs."""
        indices = self.selected_indices()
        ids = self.dataset.image_ids()
        self.entries = self._previous_entries({ids[i] for i in indices})
        pending = [i for i in indices
                   if self.entries.get(ids[i], {}).get("status") != "done" or self.entries[ids[i]].get("damaged")]
        for i in pending:
            if self.entries.get(ids[i], {}).get("damaged"):
                log.warning("%s: unreadable result (%s); inverting it again", ids[i], self.entries[ids[i]]["reason"])
        log.info("%d images selected: %d already done, %d to invert", len(indices), len(indices) - len(pending),
                 len(pending))
        for term, why in {**self.inverter.left_out, **self.inverter.random_weights}.items():
            log.warning("loss term %r is not the paper's in this run: %s", term, why)
        if self.context.enabled or self.output.part_files(SUMMARY_FILE):
            self._fold_parts()
        return pending

    def _run(self, progress: bool) -> dict:
        """Rank k of n (under torchrun) inverts pending[k::n], where pending is the list of images to
        do that rank 0 took from OUT before any rank started; each rank writes its own result
        folders and its summary part, and once all have finished, rank 0 merges the parts into
        summary.json (which every rank returns). A single process is rank 0 of 1."""
        ids = self.dataset.image_ids()
        pending = run_on_main(self.context, self._take_account)
        rank, world_size = self.context.rank, self.context.world_size
        shard = pending[rank::world_size]
        description = "invert"
        if self.context.enabled:
            self.entries = {}  # this rank's part: its own images only
            log.info("this process's shard: %d of the %d images to invert", len(shard), len(pending))
            description = f"invert [rank {rank}/{world_size}]"
        if self.job.tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.tensorboard = SummaryWriter(str(self.output.path / TENSORBOARD))
        bar = tqdm(total=len(shard), desc=description, unit="img", disable=not progress,
                   position=launched_local_rank() if self.context.enabled else None)
        started = time.perf_counter()
        done_now = 0
        position = 0
        try:
            while position < len(shard):
                batch: list[PreparedSample] = []
                while position < len(shard) and len(batch) < self.job.batch_size:
                    index = shard[position]
                    position += 1
                    prepared = self._prepare(index, ids[index])
                    if prepared is None:
                        bar.update(1)
                    else:
                        batch.append(prepared)
                if batch:
                    self._invert_and_save(batch)
                    done_now += len(batch)
                    bar.update(len(batch))
                ious = [v["iou"] for v in self.entries.values() if v["status"] == "done"]
                minutes = (time.perf_counter() - started) / 60
                bar.set_postfix(mean_iou=f"{np.mean(ious):.3f}" if ious else "-",
                                img_per_min=f"{done_now / minutes:.2f}" if minutes > 0 else "-")
                self.write_summary()
        except BaseException:
            # Stopped by something no one image caused (an interrupt, a failed write into OUT): keep
            # the account of what was done so far.
            try:
                self.write_summary()
            except Exception as err:  # noqa: BLE001 -- the original error matters more
                log.error("could not write %s: %s", self.account_path, err)
            raise
        finally:
            bar.close()
            if self.tensorboard is not None:
                self.tensorboard.close()
        summary = self.write_summary()
        if self.context.enabled:  # the parts travel as messages too: on several machines rank 0 may not see them yet
            parts = gather_on_main(self.context, self.entries)
            summary = run_on_main(self.context, lambda: self._merge_parts(parts))
        if self.context.is_main:
            log.info("inversion: %d done, %d failed, mean IoU %s -> %s", summary["done"], summary["failed"],
                     f"{summary['mean_iou']:.4f}" if summary["mean_iou"] is not None else "n/a", self.output.path)
        return summary

    def _merge_parts(self, parts: list[dict[str, dict]]) -> dict:
        """(rank 0, once every rank has finished its shard) summary.json from the account taken at
        the start (every image selected then was checked) and every rank's part (its entries)."""
        self.entries = self._previous_entries(set())
        for entries in parts:
            self.entries.update(entries)
        return self._fold_parts()


# The errors run_job reports as one line (the run refused or stopped before inverting anything).
JOB_ERRORS = (ConfigError, OutputFolderError, MissingInputsError, DataError, CheckpointError)


# Under torchrun the ranks wait for one another twice (when rank 0 has readied OUT, and when all
# have finished their shards before rank 0 merges the summary): the second wait lasts as long as
# the shards' difference, which on a long job can be far more than torch's default 30 minutes.
SHARD_WAIT = datetime.timedelta(days=7)


def _load_job_inputs(cfg, output: OutputFolder, device: torch.device) -> tuple[JobInputs, torch.nn.Module]:
    """The job's inputs, checked (check_job_inputs), and the generator, checked against the template."""
    inv = cfg.inversion
    inputs = check_job_inputs(inv, cfg.segment, output)
    if inputs.predictions is not None:  # recorded where it was found, wherever the next run starts
        inv.camera_init.predictions = str(inputs.predictions.resolve())
    # Before anything is recorded or segmented: a prior made for another template is refused.
    generator = load_generator(inputs.checkpoint, device, template=cfg.template, model=cfg.model)
    return inputs, generator


def run_job(cfg, on_locked: Optional[Callable[[Path], None]] = None) -> dict:
    """Everything scripts/invert.py does for an experiment config (meshinv.config.ExperimentConfig),
    in the order that keeps OUT consistent: validate the settings, refuse a dataset folder as OUT,
    lock OUT (`on_locked(OUT)` then runs, e.g. to log into OUT/log.txt), clean stale temp files,
    check every input at once, load and check the generator, record the settings (refusing a
    resume with other ones), segment the photos that lack a mask, and invert. Returns the summary;
    raises one of JOB_ERRORS when it cannot start.

    Under torchrun (WORLD_SIZE > 1) the processes form a gloo group (it only passes small messages
    and waits, on CPU or GPU). Rank 0 alone readies OUT (everything above up to the segmentation,
    under its lock); then every rank loads the inputs (on cuda:LOCAL_RANK for a CUDA device) and
    inverts its shard of the images (InversionRun._run). Whatever stops rank 0 from starting stops
    every rank, with the same error."""
    inv = cfg.inversion
    validate_inversion(inv)
    device = resolve_device(cfg.device)
    started_group = not torch.distributed.is_initialized()
    context = init_distributed(device, backend="gloo", timeout=SHARD_WAIT)
    try:
        device = local_device(device)
        output = OutputFolder(inv.out_dir)
        run_on_main(context, lambda: output.refuse_dataset(inv.data_root))
        with output.locked(context):
            if on_locked is not None:
                on_locked(output.path)
            inputs = generator = None

            def ready_folder() -> dict:
                nonlocal inputs, generator
                output.remove_stale_temp_files()
                inputs, generator = _load_job_inputs(cfg, output, device)
                output.check_and_record_settings(to_dict(cfg), inputs.checkpoint, left_out=inputs.left_out)
                save_config(cfg, output.path / RUN_CONFIG_FILE)
                if inputs.without_masks:  # without the segmenter's weights, each such photo gets the reason
                    segment_missing(inputs.dataset, output.path / MASK_CACHE, cfg.segment, device)
                return {"left_out": inputs.left_out,
                        "mask_unavailable": dict(getattr(inputs.dataset, "mask_unavailable", {}))}

            on_main = run_on_main(context, ready_folder)
            if not context.is_main:  # after rank 0 fetched what was missing and made the masks
                inputs, generator = _load_job_inputs(cfg, output, device)
                if set(inputs.left_out) != set(on_main["left_out"]):
                    raise MissingInputsError(
                        f"process {context.rank} would leave out the loss terms {sorted(inputs.left_out)} and "
                        f"rank 0 {sorted(on_main['left_out'])} ({inputs.left_out or on_main['left_out']}): every "
                        "machine of a torchrun job needs the same weight files")
                if on_main["mask_unavailable"]:  # why rank 0 could not make some photos' masks
                    inputs.dataset.mask_unavailable.update(on_main["mask_unavailable"])
            camera_predictor = (load_camera_predictor(inv.camera_init.predictor, device).eval()
                                if inv.camera_init.predictor else None)
            inverter = Inverter(generator, build_template(cfg.template), inv, device, inputs.vgg, inputs.left_out)
            return InversionRun(inverter, inputs.dataset, inv, camera_predictor, output, context).run()
    finally:
        if started_group:
            shutdown(context)
