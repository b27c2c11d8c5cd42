"""Data-parallel training under ``torchrun`` (gloo on CPU, NCCL on GPU).

``adapterhub train ...`` run as ``torchrun --nproc_per_node=N $(which adapterhub) train ...``
(or ``torchrun -m adapterhub.trainer.cli ...``) picks up ``RANK``/``WORLD_SIZE`` from the
environment and trains data-parallel: every rank holds the frozen base plus the adapter,
sees its own shard of the data, and the adapter gradients are averaged across ranks
after each step's micro-batches. Rank 0 alone writes checkpoints and the artifact.

Why not ``torch.nn.parallel.DistributedDataParallel``: DDP only synchronises parameters
registered on the module it wraps, while an adapter's parameters may live outside the
model's module tree (a prefix-tuning encoder, a third-party method's side modules). The
loop therefore all-reduces exactly ``adapter.trainable_parameters()`` — the same math as
DDP with ``no_sync()`` on all but the last micro-batch (one collective per optimizer step,
over one flattened buffer), and it works unchanged for every method plugin.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from adapterhub.errors import TrainingError


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job (``world_size == 1``: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce_sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over ranks (float64 on CPU/gloo or the NCCL device)."""
        if not self.enabled:
            return [float(v) for v in values]
        t = torch.tensor(list(values), dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return [float(v) for v in t.cpu()]

    def any(self, flag: bool) -> bool:
        """True on every rank if it is True on any rank (Ctrl-C, early stop, errors)."""
        return self.all_reduce_sum([1.0 if flag else 0.0])[0] > 0

    def average_gradients(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Average ``.grad`` of ``params`` over ranks, as one flattened collective."""
        if not self.enabled:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for p, g in zip(params, grads, strict=True):
            n = g.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n

    def broadcast_parameters(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Start every rank from rank 0's adapter initialisation."""
        if not self.enabled:
            return
        with torch.no_grad():
            for p in params:
                dist.broadcast(p.data, src=0)

    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    def shutdown(self) -> None:
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()


def from_environment(device: str | None = None, timeout_s: float = 600.0) -> DistContext:
    """A :class:`DistContext` from torchrun's env vars; initialises the process group.

    Without ``WORLD_SIZE`` (or with ``WORLD_SIZE=1``) this is the single-process context.
    CUDA ranks use ``cuda:LOCAL_RANK`` and NCCL; CPU ranks use gloo.
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = int(os.environ.get("RANK", "0") or 0)
    local = int(os.environ.get("LOCAL_RANK", str(rank)) or 0)
    want_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if world <= 1:
        dev = torch.device(device) if device else torch.device("cuda" if want_cuda else "cpu")
        return DistContext(device=dev)
    if "MASTER_ADDR" not in os.environ:
        raise TrainingError("WORLD_SIZE is set but MASTER_ADDR is not: launch with torchrun --nproc_per_node=N")
    backend = "nccl" if want_cuda else "gloo"
    if want_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    initialized_here = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s))
        initialized_here = True
    return DistContext(rank=rank, world_size=world, local_rank=local, device=dev, initialized_here=initialized_here)


def shard(indices: Sequence[int], ctx: DistContext) -> list[int]:
    """This rank's share of ``indices`` (strided, so every rank gets a similar mix)."""
    part = list(indices)[ctx.rank :: ctx.world_size]
    if not part:
        raise TrainingError(
            f"rank {ctx.rank} got no training examples: {len(indices)} example(s) across {ctx.world_size} ranks"
        )
    return part
