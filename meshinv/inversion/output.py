"""The output folder of an inversion job (OUT): one writer at a time, results only inside it, and
the resume guard. Everything that decides what may be written into OUT lives here.

    OUT/.lock           held (fcntl.flock) by the run writing into OUT; records its pid and host
    OUT/settings.json   the result-changing settings of the results in OUT (the resume guard's record)
    OUT/config.yaml     the resolved config of the latest run (reproduce it with --config)
    OUT/summary.json    every image's status (meshinv/inversion/run.py)
    OUT/summary.rank<k>.json, log.rank<k>.txt   process k's part of a sharded run (torchrun)
    OUT/<image id>/     one image's results (meshinv/inversion/results.py)

A run sharded over processes by torchrun is one writer: its rank 0 holds the lock for the whole job
(recording the job's id) and the other ranks write under it, so a second, unrelated run is still
refused; each rank writes only its own images' folders and its own part files.

The resume guard: a re-run skips finished images, so it must make results the same way. The
settings that decide a result are the inversion section but its RUN_ONLY keys (that is, the
algorithm half, InversionAlgorithm, less the keys that only change how much is computed at once:
init_batch_size, loss.chunk_size, recompute_target_features), the template, the generator
checkpoint's content (sha256, so moving the file is fine), and the loss terms left out for lack of
weights (`loss.on_missing_vgg: skip`: the same config computes another loss where VGG is missing).
Any job key (data, limit, image_ids, batch_size, export, tensorboard, out_dir, ...) may change.
A setting added to the algorithm after results were recorded is absent from their record; it matches
the value that reproduces them (`ADDED_SETTINGS`), so a new option does not lock older folders out.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import socket
import time
from pathlib import Path
from typing import Iterator, Optional

from ..data.datasets import dataset_root, detect_kind
from ..data.sample import DataError
from ..utils.config import flatten_config, run_only_settings, to_dict
from ..utils.distributed import SINGLE_PROCESS, DistributedContext, barrier, launched_job_id, run_on_main
from ..utils.io import file_sha256, json_text, remove_stale_temp_files, save_json
from .config import InversionConfig, RefineConfig
from .results import RUN_CONFIG_FILE, finished_ids, saved_run_config

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
SETTINGS_FILE = "settings.json"
SUMMARY_FILE = "summary.json"
LOG_FILE = "log.txt"
MASK_CACHE = "masks"          # automatic masks of --images (meshinv/data/segment.py)
TENSORBOARD = "tensorboard"
# Names of the job's own entries in OUT: an image with one of these ids would collide with them.
_RESERVED = {SETTINGS_FILE, SUMMARY_FILE, RUN_CONFIG_FILE, LOG_FILE, MASK_CACHE, TENSORBOARD}
_RANK_PART = re.compile(r"(summary|log)\.rank\d+\.(json|txt)")  # rank_file()'s names
_MAX_NAME_BYTES = 255         # the longest file name common file systems take
_CHECKPOINT_KEY = "generator checkpoint sha256"
_LEFT_OUT_KEY = "loss terms left out for lack of weights"
# Algorithm settings added after results were first recorded, each with the value that computes what
# was computed before it existed: a record without the key was made with that value.
ADDED_SETTINGS: dict[str, object] = {
    "inversion.select_shortlist": 0,
    "inversion.select_prescore_size": None,
    "inversion.loss.texture_loss": "chamfer",
    "inversion.loss.mask_loss": "chamfer",
    "inversion.loss.contextual_bandwidth": 0.5,
    "inversion.loss.contextual_eps": 1e-5,
    # the refinement (off) and its knobs
    **{f"inversion.refine.{key}": value for key, value in flatten_config(to_dict(RefineConfig())).items()},
}


class OutputFolderError(RuntimeError):
    """OUT cannot be used by this run (locked, a dataset, results made with other settings)."""


def result_settings(config: dict, checkpoint_sha256: Optional[str] = None,
                    left_out: Optional[dict[str, str]] = None) -> dict[str, object]:
    """The settings that decide an image's result, as {dotted key: value}, from a resolved
    experiment config (a plain dict: to_dict(cfg), or a run's saved config.yaml), and the loss
    terms this machine leaves out for lack of weights (`inversion.loss.on_missing_vgg: skip`), so
    that results made with and without them are not mixed."""
    # Through JSON, so that a tuple and a list, or a YAML and a JSON number, compare equal.
    tree = json.loads(json_text({"inversion": config.get("inversion") or {}, "template": config.get("template") or {}}))
    ignored = tuple(run_only_settings(InversionConfig(), "inversion"))
    flat = {k: v for k, v in flatten_config(tree).items()
            if not any(k == i or k.startswith(i + ".") for i in ignored)}
    if checkpoint_sha256 is not None:
        flat[_CHECKPOINT_KEY] = checkpoint_sha256
    if left_out:  # absent when none, as in folders written before it was recorded
        flat[_LEFT_OUT_KEY] = sorted(left_out)
    return flat


def rank_file(name: str, rank: int) -> str:
    """Process `rank`'s own part of one of OUT's files in a sharded run (summary.json ->
    summary.rank1.json)."""
    stem, _, suffix = name.rpartition(".")
    return f"{stem}.rank{rank}.{suffix}"


def log_file(rank: int) -> str:
    """The log file of process `rank` in OUT: log.txt for rank 0 (or a single process)."""
    return LOG_FILE if rank == 0 else rank_file(LOG_FILE, rank)


def _short(value: object) -> str:
    text = json_text(value)
    return text if len(text) <= 40 else text[:37] + "..."


class OutputFolder:
    """OUT of one inversion job (see the module doc). Use `with folder.locked():` around the run."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock_fd: Optional[int] = None
        self._shared = False          # writing under the lock of this torchrun job's rank 0

    # -- refusing folders that are not ours ----------------------------------------------------------
    def refuse_dataset(self, data_root: str | os.PathLike) -> None:
        """Raise OutputFolderError when OUT is the dataset folder `data_root` (a path or a dataset
        name), contains it, or holds another dataset: the run would write its
        config.yaml, summary.json and result folders among the dataset's own files."""
        out, data = self.path.resolve(), dataset_root(data_root).resolve()
        if out == data or out in data.parents:
            raise OutputFolderError(f"the output folder {self.path} is the dataset folder {data_root} or contains it: "
                                    "results would be written among the dataset's files; choose another --out")
        if not self.path.is_dir() or (self.path / SETTINGS_FILE).is_file() or finished_ids(self.path):
            return
        kind = detect_kind(self.path)
        if kind is not None:
            raise OutputFolderError(f"the output folder {self.path} holds a dataset ({kind}), not inversion results: "
                                    "its config.yaml and summary.json would be overwritten; choose another --out")

    # -- one writer at a time ------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self, context: DistributedContext = SINGLE_PROCESS) -> Iterator["OutputFolder"]:
        """Hold OUT's lock for the block; OutputFolderError naming the holder if another process has
        it. The lock is an flock, which the kernel releases when its process dies (even by SIGKILL),
        so a lock left behind by a dead run is simply taken over.

        Under torchrun (`context` enabled), rank 0 takes it for the whole job and every rank learns
        whether it could (so all of them stop when another run holds OUT); the other ranks then
        write under it (`is_locked`, but the folder-wide work that needs the lock itself is rank 0's),
        and rank 0 keeps it until every rank has left the block."""
        self._lock_fd = run_on_main(context, self._take_lock)
        if not context.is_main:
            self._lock_fd = None  # rank 0's descriptor number, meaningless here
            self._shared = True
        try:
            yield self
            barrier(context)  # no rank writes after the lock is released
        finally:
            self._shared = False
            fd, self._lock_fd = self._lock_fd, None
            if fd is not None:
                os.ftruncate(fd, 0)  # released cleanly: nothing to take over next time
                os.close(fd)  # closing the descriptor releases the flock

    def _take_lock(self) -> int:
        self.path.mkdir(parents=True, exist_ok=True)
        path = self.path / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise OutputFolderError(f"cannot lock {path}: {err}") from None
                raise OutputFolderError(f"the output folder {self.path} is in use by another inversion run "
                                        f"({self._holder(fd)}): wait for it to finish, or use another --out") from None
            previous = self._holder(fd)
            if previous != "holder unknown":
                log.warning("%s: taking over the lock of a run that ended without releasing it (%s; that process "
                            "is gone)", self.path, previous)
            os.ftruncate(fd, 0)
            holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
            if launched_job_id() is not None:
                holder["torchrun_job"] = launched_job_id()
            os.pwrite(fd, json_text(holder).encode(), 0)
            return fd
        except BaseException:
            os.close(fd)
            raise

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            holder = json.loads(os.pread(fd, 4096, 0).decode() or "null")
            job = f" (rank 0 of torchrun job {holder['torchrun_job']})" if "torchrun_job" in holder else ""
            return f"pid {holder['pid']}{job} on host {holder['host']}, since {holder['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "holder unknown"

    @property
    def is_locked(self) -> bool:
        """Whether this process may write into OUT now: it holds OUT's lock, or its torchrun job's
        rank 0 does."""
        return self._lock_fd is not None or self._shared

    def _require_lock(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError(f"{self.path}: call this inside `with folder.locked():`, on rank 0 under torchrun")

    def remove_stale_temp_files(self) -> list[Path]:
        """Temporary files of writes that a killed run left in OUT (only by the lock's holder, before
        any rank writes: a live writer's would go too)."""
        self._require_lock()
        return remove_stale_temp_files(self.path)

    # -- where an image's results go -----------------------------------------------------------------
    def result_folder(self, image_id: str) -> Path:
        """OUT/<image id>; a DataError when the id would not make a folder of its own directly in OUT
        (empty, `.`, `..`, a path, hidden, one of the job's own names, too long)."""
        reason = None
        if not image_id or image_id in (".", ".."):
            reason = "it is not a folder name"
        elif "/" in image_id or "\\" in image_id or os.sep in image_id or "\0" in image_id:
            reason = "it holds a path separator"
        elif image_id.startswith("."):
            reason = "it would be a hidden folder"
        elif image_id in _RESERVED or _RANK_PART.fullmatch(image_id):
            reason = f"{image_id} is the name of one of the run's own files in the output folder"
        elif len(image_id.encode()) > _MAX_NAME_BYTES:
            reason = f"it is longer than {_MAX_NAME_BYTES} bytes"
        folder = self.path / image_id
        if reason is None and folder.resolve().parent != self.path.resolve():  # e.g. a symlink out of OUT
            reason = f"{folder} leads out of the output folder"
        if reason is not None:
            raise DataError(f"image id {image_id!r} cannot name a result folder in {self.path}: {reason} "
                            "(rename the image file)")
        return folder

    def finished_ids(self) -> set[str]:
        return finished_ids(self.path)

    def part_files(self, name: str) -> list[Path]:
        """The ranks' parts of OUT's file `name` (rank_file) that are in OUT now."""
        stem, _, suffix = name.rpartition(".")
        return sorted(p for p in self.path.glob(f"{stem}.rank*.{suffix}") if _RANK_PART.fullmatch(p.name))

    # -- the resume guard ----------------------------------------------------------------------------
    def recorded_settings(self) -> Optional[dict[str, object]]:
        """The result settings recorded for the results in OUT; from config.yaml for a folder
        written before settings.json existed (no checkpoint content then); None if neither."""
        path = self.path / SETTINGS_FILE
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except ValueError as err:
                raise OutputFolderError(f"{path} is damaged ({err}); delete it only if every result in "
                                        f"{self.path} was made with the current settings") from None
        legacy = saved_run_config(self.path)
        return result_settings(legacy) if legacy is not None else None

    def check_and_record_settings(self, config: dict, checkpoint: str | os.PathLike,
                                  left_out: Optional[dict[str, str]] = None) -> None:
        """The resume guard (see the module doc): raise OutputFolderError naming every setting that
        differs from those of the finished results in OUT; otherwise record the current ones.
        left_out: loss terms left out for lack of weights (compared too)."""
        self.check_and_record(result_settings(config, file_sha256(checkpoint), left_out))

    def check_and_record(self, current: dict[str, object]) -> None:
        """The resume guard on result settings already computed (result_settings)."""
        self._require_lock()
        previous = self.recorded_settings()
        finished = self.finished_ids()
        if finished and previous is None:
            log.warning("%s holds %d results but no record of their settings: they are kept as they are",
                        self.path, len(finished))
        elif finished:
            previous = {**ADDED_SETTINGS, **previous}
            keys = previous.keys() | current.keys()
            if _CHECKPOINT_KEY not in previous:  # an older folder: its checkpoint content is unknown
                keys.discard(_CHECKPOINT_KEY)
            changed = sorted(key for key in keys if previous.get(key) != current.get(key))
            if changed:
                details = ", ".join(f"{key} ({_short(previous.get(key))} there, {_short(current.get(key))} now)"
                                    for key in changed)
                raise OutputFolderError(
                    f"{self.path} already holds {len(finished)} results made with other settings: {details}. "
                    "Re-running would skip them and mix two kinds of result; use a new --out, or delete the "
                    "folder to redo it. (Job settings such as limit, image_ids, batch_size, export and "
                    "tensorboard may change.)")
        save_json(self.path / SETTINGS_FILE, current)
