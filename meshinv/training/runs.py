"""What the two trainers (the GAN pretraining loop and the camera predictor) share: the run folder
and its guard, the latest checkpoint, the data order, the learning-rate setting, the loss check
and the timing fields of the summary.

A run folder holds one run: `checkpoint-latest.pt` (the whole state, rewritten every few steps)
and `config.yaml` (the resolved config that made it). `prepare_run_folder` refuses to start a new
run over it (unless forced) and to resume it with settings that change what it computes, naming
them; the settings a config class lists in `RUN_ONLY` (where it writes, how long it runs, what it
logs) may change.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from ..models.checkpoints import CheckpointError, read_checkpoint
from ..utils.config import RUN_CONFIG_FILE, changed_settings, run_only_settings, save_config, saved_run_config, to_dict

log = logging.getLogger(__name__)

LATEST = "checkpoint-latest.pt"


class RunFolderError(RuntimeError):
    """A run folder that the requested run must not write into (the message says what to do)."""


def prepare_run_folder(out_dir: str | os.PathLike, cfg: Any, sections: Sequence[str], resume: bool,
                       force: bool = False, write: bool = True) -> None:
    """Check that a run may write into `out_dir`, then record `cfg` there (config.yaml).

    A folder that holds a checkpoint is refused unless `resume` (continue it) or `force` (start
    over: its latest checkpoint is deleted first, so that a later --resume cannot continue the old
    state under the new config). Resuming is refused when a setting in `sections` of `cfg` differs
    from the folder's config.yaml, except the RUN_ONLY ones. `write=False` (the other processes of
    a distributed run) checks without writing.
    """
    out = Path(out_dir)
    latest = out / LATEST
    if resume and force:
        raise RunFolderError("--resume continues a run and --force starts it over: give one of them")
    if latest.is_file() and not (resume or force):
        raise RunFolderError(f"{out} already holds a run ({latest}); starting again would overwrite it. Use "
                             "--resume to continue it, a new out_dir to start another run, or --force to start "
                             "over in this folder")
    if latest.is_file() and resume:
        previous = saved_run_config(out)
        if previous is None:
            log.warning("%s has no %s: cannot check that the resumed run uses the same settings", out,
                        RUN_CONFIG_FILE)
        else:
            changed = changed_settings(previous, to_dict(cfg), sections,
                                       ignore=set().union(*(run_only_settings(getattr(cfg, s), s) for s in sections)))
            if changed:
                raise RunFolderError(
                    f"{out} holds a run made with other settings ({', '.join(changed)}; see {out / RUN_CONFIG_FILE}): "
                    "resuming would continue it with these. Resume with its settings, or start another run in a "
                    "new out_dir")
    if write:
        if latest.is_file() and force:
            log.warning("--force: starting over in %s (deleting %s)", out, latest)
            latest.unlink()
        save_config(cfg, out / RUN_CONFIG_FILE)


def read_training_checkpoint(path: Path, required: Sequence[str], what: str) -> dict:
    """The state a trainer resumes from, with a CheckpointError naming the file when it cannot be
    read or lacks an entry that a `what` checkpoint has."""
    checkpoint = read_checkpoint(path)
    missing = [key for key in required if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path} is not a {what} checkpoint (no {', '.join(missing)})")
    return checkpoint


def epoch_order(size: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of `size` items for one epoch: a function of (seed, epoch) only, so that a
    resumed run sees the same batches."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed * 100003 + epoch))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def finite_loss(name: str, value, iteration: int, checkpoint: Path) -> float:
    """float(value), or a FloatingPointError that says where training can resume from."""
    value = float(value)
    if not math.isfinite(value):
        raise FloatingPointError(f"{name} is {value} at iteration {iteration}; the last checkpoint is {checkpoint}")
    return value


def timing_summary(iteration: int, batches_per_epoch: int, seconds: float, start_iteration: int) -> dict:
    """The summary fields every trainer reports about the run's length and speed."""
    return {"iterations": iteration, "epochs": round(iteration / batches_per_epoch, 3),
            "seconds_this_run": round(seconds, 1),
            "seconds_per_iteration": round(seconds / max(1, iteration - start_iteration), 3)}
