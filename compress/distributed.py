"""Running under torchrun: which process this is, and the few places processes must agree.

The transformers Trainer does the DistributedDataParallel training itself (it reads torchrun's
environment). compress adds only: one process group set up before any stage runs (gloo on CPU,
NCCL on GPUs), rank 0 as the only writer of variants, soft targets and logs, and soft targets
computed shard-wise and gathered. A single process is world size 1 and skips all of it.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from compress.errors import UserError


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def init() -> None:
    """Join torchrun's process group once, before any stage runs (the Trainer reuses it).

    On GPUs each process first takes its own, cuda:LOCAL_RANK: NCCL would otherwise put every
    rank on cuda:0 and stop at the first barrier ("Duplicate GPU detected").
    """
    if world_size() == 1 or dist.is_initialized():
        return
    if torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        if local_rank() >= gpus:
            raise UserError(f"torchrun started more processes on this machine than it has GPUs ({gpus}): "
                            f"use --nproc-per-node {gpus}, or CUDA_VISIBLE_DEVICES= to train on the CPU")
        torch.cuda.set_device(local_rank())
        dist.init_process_group(backend="nccl", device_id=torch.device("cuda", local_rank()))
    else:
        dist.init_process_group(backend="gloo")


def barrier() -> None:
    """Wait for every process; on GPUs the barrier names this process's device."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier(device_ids=[local_rank()] if dist.get_backend() == "nccl" else None)


def shard(rows: int) -> list[int]:
    """The row ids this process handles: every world_size-th, starting at its rank."""
    return list(range(rank(), rows, world_size()))


def gather_rows(part: torch.Tensor, rows: int) -> torch.Tensor:
    """Put each process's shard (from `shard`) back in row order; every process gets the whole. Per-token
    shards (a tagger's) are as wide as their own longest row: the whole is as wide as the widest, NaN beyond."""
    if world_size() == 1:
        return part
    parts = [None] * world_size()
    dist.all_gather_object(parts, part.cpu())
    whole = torch.full((rows, *(max(p.shape[d] for p in parts) for d in range(1, part.dim()))), torch.nan,
                       dtype=part.dtype)
    for r, piece in enumerate(parts):
        whole[(slice(r, None, world_size()), *(slice(0, n) for n in piece.shape[1:]))] = piece
    return whole
