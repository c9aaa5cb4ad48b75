"""Several processes, one run: PyTorch's own DistributedDataParallel under torchrun.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK (and the rendezvous variables); this module
reads them, starts the process group (NCCL on CUDA, Gloo on the CPU) with a timeout, and
offers the few collectives the trainer needs. A single process needs none of it.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from mile_engine.config.schema import SettingsError

# A rank that waits longer than this in a collective gives up instead of hanging.
DEFAULT_TIMEOUT_S = 300


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job: its rank among `world_size` processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether there are several processes."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 prints, writes metrics.jsonl and saves checkpoints."""
        return self.rank == 0


def from_environment() -> DistContext:
    """The context torchrun describes in the environment (one process when it is absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    return DistContext(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def setup(ctx: DistContext, device_setting: str, timeout_s: int = DEFAULT_TIMEOUT_S) -> str:
    """Start the process group and return the device setting for this rank.

    One device per process: `cuda:LOCAL_RANK` with NCCL when CUDA is used, the CPU with
    Gloo otherwise.
    """
    if not ctx.enabled or dist.is_initialized():
        return device_setting
    use_cuda = device_setting.startswith("cuda") or (
        device_setting == "auto" and torch.cuda.is_available()
    )
    if use_cuda:
        if ctx.local_rank >= torch.cuda.device_count():
            raise SettingsError(
                f"LOCAL_RANK {ctx.local_rank} has no CUDA device: this machine has "
                f"{torch.cuda.device_count()}; start at most that many processes per node."
            )
        torch.cuda.set_device(ctx.local_rank)
        device_setting = f"cuda:{ctx.local_rank}"
    else:
        device_setting = "cpu"
    dist.init_process_group(
        backend="nccl" if use_cuda else "gloo",
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    return device_setting


def teardown(synchronize: bool = False) -> None:
    """Leave the process group, if any.

    With `synchronize` (every rank reached the same end), a barrier comes first: a rank
    that destroys its group while a peer still finishes its last collective can make
    Gloo abort that peer at exit ("terminate called without an active exception", seen
    about once in eight two-process runs here). After an error, ranks may not all get
    there, so no barrier is waited for.
    """
    if dist.is_available() and dist.is_initialized():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()


def all_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum `tensor` over every rank, in place; returns it."""
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flags: list[bool], ctx: DistContext, device: torch.device) -> list[bool]:
    """Element-wise OR of boolean flags over every rank (stop / save requests)."""
    if not ctx.enabled:
        return flags
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's `obj`, in rank order (a list of one outside a job)."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's `obj`, on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
