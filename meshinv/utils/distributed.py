"""Processes launched by torchrun: who am I, joining the process group, one GPU per process, and
"rank 0 does this, everyone learns the outcome". A single process (no torchrun) needs none of it:
every helper here is then a plain call.

torchrun describes the job in the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT, TORCHELASTIC_RUN_ID); several machines join through torchrun's own rendezvous
(`--nnodes`, `--rdzv-endpoint`), so nothing here is specific to a node but LOCAL_RANK.
"""

from __future__ import annotations

import datetime
import logging
import os
import pickle
from dataclasses import dataclass
from typing import Callable, Optional, TypeVar

import torch
import torch.distributed as dist

from .errors import error_reason

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE_PROCESS = DistributedContext()


def launched_rank() -> int:
    """This process's rank as torchrun announces it in the environment (0 without torchrun); known
    before the process group starts, e.g. to let only the main process write files."""
    return int(os.environ.get("RANK", "0"))


def launched_world_size() -> int:
    """How many processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_local_rank() -> int:
    """This process's rank on its own machine (0 without torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def launched_job_id() -> Optional[str]:
    """What names this torchrun job (its run id, else its rendezvous address); None without torchrun."""
    if launched_world_size() <= 1:
        return None
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id and run_id != "none":
        return run_id
    return f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"


def init_distributed(device: torch.device, backend: Optional[str] = None,
                     timeout: Optional[datetime.timedelta] = None) -> DistributedContext:
    """Join the process group that torchrun describes in the environment, if any (NCCL for a CUDA
    device, gloo otherwise, unless `backend` says; `timeout` bounds every collective's wait)."""
    if launched_world_size() <= 1:
        return SINGLE_PROCESS
    if not dist.is_initialized():
        backend = backend or ("nccl" if device.type == "cuda" else "gloo")
        dist.init_process_group(backend=backend, **({"timeout": timeout} if timeout is not None else {}))
    context = DistributedContext(dist.get_rank(), dist.get_world_size())
    log.info("process %d of %d (%s)", context.rank, context.world_size, dist.get_backend())
    return context


def local_device(device: torch.device) -> torch.device:
    """Under torchrun, one GPU per process: cuda:LOCAL_RANK."""
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        index = int(os.environ["LOCAL_RANK"])
        count = torch.cuda.device_count()
        if index >= count:
            raise ValueError(f"LOCAL_RANK {index} needs GPU {index}, but this machine has {count}: start at most "
                             f"{count} processes per node (torchrun --nproc_per_node)")
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return device


def shutdown(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: DistributedContext) -> None:
    """Wait until every process gets here."""
    if context.enabled:
        dist.barrier()


def run_on_main(context: DistributedContext, action: Callable[[], T]) -> T:
    """Once every process has got here, `action()` runs on rank 0 alone; every process returns its
    value (pickled), or raises the error it raised, so that no process is left waiting for one that
    failed. Without torchrun, simply `action()`."""
    if not context.enabled:
        return action()
    barrier(context)
    outcome: list = [None]
    if context.is_main:
        try:
            outcome = [(True, action())]
        except Exception as err:  # noqa: BLE001 -- handed to every process, then raised
            outcome = [(False, err)]
        try:
            pickle.dumps(outcome)
        except Exception as err:  # noqa: BLE001 -- an unpicklable value or error still reaches every process
            ok, value = outcome[0]
            reason = (error_reason(value) if not ok
                      else f"rank 0's result cannot be sent to the other processes ({error_reason(err)})")
            outcome = [(False, RuntimeError(reason))]
    dist.broadcast_object_list(outcome, src=0)
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def gather_on_main(context: DistributedContext, value: T) -> Optional[list[T]]:
    """Every process's `value` (pickled) in a list by rank, on rank 0 (which waits for all of them);
    None on the others. Without torchrun, [value]."""
    if not context.enabled:
        return [value]
    gathered = [None] * context.world_size if context.is_main else None
    dist.gather_object(value, gathered, dst=0)
    return gathered
