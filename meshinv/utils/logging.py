"""One place to configure logging for scripts; library modules only call logging.getLogger."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .distributed import launched_rank, launched_world_size

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str | int = "INFO", log_file: str | os.PathLike | None = None) -> None:
    """Log to stderr, and also to `log_file` when given (its folder is created). Under torchrun,
    each line starts with the process's rank (the processes share the terminal)."""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    world_size = launched_world_size()
    line = f"[rank {launched_rank()}/{world_size}] {_FORMAT}" if world_size > 1 else _FORMAT
    logging.basicConfig(level=level, format=line, handlers=handlers, force=True)
