"""Data parallelism for pretraining, launched by torchrun (NCCL on GPU, gloo on CPU).

Each process keeps a full replica. Gradients are averaged across processes before every optimiser
step and floating-point buffers (batch-norm statistics, spectral-norm vectors) after it, so the
replicas stay identical; this is the manual scheme of StyleGAN2-ADA, which, unlike the
DistributedDataParallel wrapper, lets one module take part in several phases per iteration.
A single process (no torchrun) needs none of it.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn

# The process group itself (joining it, ranks, one GPU per process) is shared with the inversion.
from ..utils.distributed import (  # noqa: F401 (re-exported)
    DistributedContext, init_distributed, launched_rank, local_device, shutdown,
)


def broadcast_module(module: nn.Module, context: DistributedContext) -> None:
    """Make every replica start from rank 0's parameters and buffers."""
    if context.enabled:
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)


def average_gradients(module: nn.Module, context: DistributedContext) -> None:
    if not context.enabled:
        return
    for p in module.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)  # every rank must take part in every all-reduce
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad.div_(context.world_size)


def average_buffers(module: nn.Module, context: DistributedContext) -> None:
    if not context.enabled:
        return
    for b in module.buffers():
        if b.is_floating_point():
            dist.all_reduce(b, op=dist.ReduceOp.SUM)
            b.div_(context.world_size)


def all_reduce_mean(value: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    if context.enabled:
        value = value.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= context.world_size
    return value


def replicas_identical(modules: list[nn.Module], context: DistributedContext) -> bool:
    """Whether every process holds bit-identical parameters and buffers (a position-weighted
    float64 checksum gathered from all ranks)."""
    if not context.enabled:
        return True
    checksum = torch.zeros(2, dtype=torch.float64)
    for module in modules:
        for tensor in list(module.parameters()) + list(module.buffers()):
            values = tensor.detach().double().reshape(-1).cpu()
            weights = torch.arange(1, values.numel() + 1, dtype=torch.float64)
            checksum += torch.stack([values.sum(), (values * weights).sum()])
    device = next(modules[0].parameters()).device
    gathered = [torch.zeros_like(checksum, device=device) for _ in range(context.world_size)]
    dist.all_gather(gathered, checksum.to(device))
    return all(torch.equal(g.cpu(), gathered[0].cpu()) for g in gathered)
