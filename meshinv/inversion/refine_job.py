"""The refinement (meshinv/inversion/refine.py) applied to a finished run folder, without inverting
again (scripts/refine.py).

From RUN (a folder scripts/invert.py wrote) into OUT, a run folder of its own that scripts/evaluate.py
reads as it reads RUN: each selected image with a result in RUN is read again from the dataset by
the run's own code (run.py: open_job_dataset, read_sample; RUN's crop, masks and, for raw photos, its
mask cache), its record's mesh map, texture and final camera are refined, and OUT/<id>/ gets the
usual files (run.py: ResultWriter) with the refined record; OUT/summary.json accounts for every
image, and images the inversion failed on are carried over as failures. The settings are RUN's
config.yaml with --set overrides, which may change the refinement (`inversion.refine.*`) and any job
key (limit, image_ids, batch_size, export, out_dir), nothing else. OUT is locked, files are
atomic, an image that fails is recorded and the rest go on, and a re-run skips finished images
(with the resume guard of output.py: the refinement settings must match).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Optional

import torch

from ..geometry.template import build_template
from ..utils.config import ConfigError, save_config, to_dict
from ..utils.device import resolve_device
from ..utils.errors import error_reason
from ..utils.io import save_json
from .config import validate_inversion
from .output import ADDED_SETTINGS, SUMMARY_FILE, OutputFolder, OutputFolderError, result_settings
from .refine import refine_batch
from .results import RUN_CONFIG_FILE, InversionRecord, load_record, saved_run_config
from .run import (PreparedSample, ResultWriter, dataset_name, open_job_dataset, read_sample, selected_indices,
                  summary_entry, summary_of)

log = logging.getLogger(__name__)

REFINE_SETTINGS = "inversion.refine."


def _split_settings(settings: dict[str, object]) -> tuple[dict[str, object], dict[str, object]]:
    """(the settings but the refinement's, the refinement's)."""
    refine = {k: v for k, v in settings.items() if k.startswith(REFINE_SETTINGS)}
    return {k: v for k, v in settings.items() if k not in refine}, refine


def _read_summary(folder: Path) -> dict:
    path = folder / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError) as err:
        log.warning("%s is unreadable (%s): the run's failures and left-out terms are not carried over", path, err)
        summary = {}
    return summary if isinstance(summary, dict) else {}


def check_refine_settings(cfg, run_dir: Path) -> dict:
    """RUN's saved config (a plain dict), after checking that `cfg` is it but for the refinement and
    the job keys, that the refinement is on and that RUN itself was not refined: a ConfigError
    naming the keys otherwise."""
    run_config = saved_run_config(run_dir)
    if run_config is None:
        raise FileNotFoundError(f"{run_dir / RUN_CONFIG_FILE} not found: --run must be a folder scripts/invert.py wrote")
    if not cfg.inversion.refine.enabled:
        raise ConfigError("nothing to refine: inversion.refine.texture and inversion.refine.shape are both off "
                          "(--set inversion.refine.texture=true and/or inversion.refine.shape=true)")
    previous, previous_refine = _split_settings({**ADDED_SETTINGS, **result_settings(run_config)})
    if previous_refine["inversion.refine.texture"] or previous_refine["inversion.refine.shape"]:
        raise ConfigError(f"{run_dir} was refined already by its run (inversion.refine in its {RUN_CONFIG_FILE}); "
                          "refine the results of an unrefined run")
    current, _ = _split_settings(result_settings(to_dict(cfg)))
    changed = sorted(k for k in previous.keys() | current.keys() if previous.get(k) != current.get(k))
    if changed:
        details = ", ".join(f"{k} ({previous.get(k)!r} in {run_dir}, {current.get(k)!r} now)" for k in changed)
        raise ConfigError(f"only inversion.refine.* and job keys may differ from the run's settings: {details}")
    return run_config


class RefineJob:
    """Refines the results of RUN into cfg.inversion.out_dir (the module doc)."""

    def __init__(self, cfg, run_dir: str | Path):
        self.cfg = cfg
        self.inv = cfg.inversion
        self.run_dir = Path(run_dir)
        self.output = OutputFolder(self.inv.out_dir)
        self.image_size = self.inv.crop.img_size
        self.entries: dict[str, dict] = {}

    def _fail(self, image_id: str, reason: str) -> None:
        log.warning("image %s failed: %s", image_id, reason)
        self.entries[image_id] = {"status": "failed", "reason": reason}

    def run(self) -> dict:
        validate_inversion(self.inv)
        check_refine_settings(self.cfg, self.run_dir)
        if self.output.path.resolve() == self.run_dir.resolve():
            raise OutputFolderError(f"the output folder {self.output.path} is the run folder: refined results go into "
                                    "a folder of their own (--out)")
        self.output.refuse_dataset(self.inv.data_root)
        source = OutputFolder(self.run_dir)
        device = resolve_device(self.cfg.device)
        self.template = build_template(self.cfg.template).to(device)
        self.device = device
        self.dataset = open_job_dataset(self.inv, self.inv.crop, source)
        self.writer = ResultWriter(self.template, self.inv.job.export)
        run_summary = _read_summary(self.run_dir)
        with self.output.locked():
            self.output.remove_stale_temp_files()
            # RUN's recorded settings (generator content included) with this refinement.
            recorded = source.recorded_settings() or result_settings(saved_run_config(self.run_dir))
            _, refine = _split_settings(result_settings(to_dict(self.cfg)))
            self.output.check_and_record({**_split_settings(recorded)[0], **refine})
            save_config(self.cfg, self.output.path / RUN_CONFIG_FILE)
            return self._run(source, run_summary)

    def _run(self, source: OutputFolder, run_summary: dict) -> dict:
        ids = self.dataset.image_ids()
        selected = selected_indices(self.dataset, self.inv.job)
        self.left_out = run_summary.get("left_out") or {}
        self.random_weights = run_summary.get("random_weights") or {}
        in_run, done = source.finished_ids(), self.output.finished_ids()
        run_images = run_summary.get("images") if isinstance(run_summary.get("images"), dict) else {}
        for index in selected:
            image_id = ids[index]
            if image_id in done:
                try:
                    self.entries[image_id] = summary_entry(load_record(self.output.path / image_id))
                    continue
                except Exception as err:  # noqa: BLE001 -- damaged: redone below
                    log.warning("%s: unreadable refined result (%s); refining it again", image_id, err)
                    done.discard(image_id)
            if image_id not in in_run:
                entry = run_images.get(image_id)
                reason = entry.get("reason", "") if isinstance(entry, dict) else ""
                self._fail(image_id, f"the inversion has no result for it in {self.run_dir}" +
                           (f": {reason}" if reason else ""))
        pending = [i for i in selected if ids[i] in in_run and ids[i] not in done]
        log.info("%d images selected: %d refined already, %d to refine from %s", len(selected),
                 len(selected) - len(pending), len(pending), self.run_dir)
        try:
            for start in range(0, len(pending), self.inv.batch_size):
                batch = []
                for index in pending[start:start + self.inv.batch_size]:
                    item = self._read(index, ids[index])
                    if item is not None:
                        batch.append(item)
                if batch:
                    self._refine_and_save(batch)
                self._write_summary()
        finally:
            summary = self._write_summary()
        log.info("refinement: %d done, %d failed -> %s", summary["done"], summary["failed"], self.output.path)
        return summary

    def _write_summary(self) -> dict:
        summary = summary_of(self.entries, dataset_name(self.dataset, self.inv.job), self.inv.checkpoint,
                             self.image_size, self.left_out, self.random_weights)
        summary["refined_from"] = str(self.run_dir)
        save_json(self.output.path / SUMMARY_FILE, summary)
        return summary

    def _read(self, index: int, image_id: str) -> Optional[tuple[InversionRecord, PreparedSample]]:
        """An image's record in RUN and its sample, prepared as the run prepared it; None (recorded)
        when either cannot be used."""
        try:
            self.output.result_folder(image_id)
            record = load_record(self.run_dir / image_id)
            if record.image_size != self.image_size:
                raise ValueError(f"{self.run_dir / image_id}: the result was made at {record.image_size} px but "
                                 f"inversion.crop.img_size is {self.image_size}")
            sample = read_sample(self.dataset, index, self.image_size)
            return record, PreparedSample(sample, record.camera_init, record.camera_source)
        except Exception as err:  # noqa: BLE001 -- recorded against the image
            self._fail(image_id, error_reason(err))
            return None

    def _refine_and_save(self, batch: list[tuple[InversionRecord, PreparedSample]]) -> None:
        records = [r for r, _ in batch]
        try:
            refinement = refine_batch(
                torch.stack([p.sample.image for _, p in batch]), torch.stack([p.sample.mask for _, p in batch]),
                torch.stack([r.camera for r in records]), torch.stack([r.mesh_map for r in records]).to(self.device),
                torch.stack([r.texture for r in records]).to(self.device), self.template, self.inv.refine,
                chunk_size=self.inv.loss.chunk_size)
        except Exception as err:  # noqa: BLE001 -- recorded against the image, or narrowed down below
            if len(batch) == 1:
                self._fail(records[0].image_id, f"refinement failed: {error_reason(err)}")
                return
            log.warning("a batch failed (%s); retrying its images one by one", error_reason(err))
            for item in batch:
                self._refine_and_save([item])
            return
        for i, (record, prepared) in enumerate(batch):
            refined = replace(record, texture=refinement.texture[i].cpu(), mesh_map=refinement.mesh_map[i].cpu(),
                              vertices=refinement.vertices[i].cpu(), iou=float(refinement.iou[i]),
                              seconds=record.seconds + refinement.info[i]["seconds"], refine=refinement.info[i])
            if not all(torch.isfinite(t).all() for t in (refined.texture, refined.vertices)):
                self._fail(record.image_id, "the refinement diverged: non-finite texture or vertices")
                continue
            problem = self.writer.try_write(self.output.result_folder(record.image_id), refined, prepared,
                                            refinement.render[i].cpu(), refinement.render_mask[i].cpu())
            if problem is not None:
                self._fail(record.image_id, problem)
                continue
            self.entries[record.image_id] = summary_entry(refined)


def refine_run(cfg, run_dir: str | Path) -> dict:
    """scripts/refine.py: refine RUN's results into cfg.inversion.out_dir; returns the summary."""
    return RefineJob(cfg, run_dir).run()
