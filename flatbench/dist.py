"""Data-parallel cells under torchrun: one process per device, batches dealt out by rank.

``torchrun --nproc-per-node=K -m flatbench ...`` starts K copies of the cell. Each rank
crafts and evaluates the batches b with b % K == rank. A batch's noise is keyed by the
seed and the index of its first image (not by the rank), with the same batch boundaries as
a single process, so the result is identical to a single-process run. Counts are reduced
with torch.distributed; rank 0 alone writes files and logs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List

import torch
import torch.distributed as dist


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mine(self, batch_index: int) -> bool:
        return batch_index % self.size == self.rank

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def _reduce(self, value: float, op) -> float:
        if not self.active:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64)
        dist.all_reduce(t, op=op)
        return float(t.item())

    def sum(self, value: float) -> float:
        return self._reduce(value, dist.ReduceOp.SUM)

    def max(self, value: float) -> float:
        return self._reduce(value, dist.ReduceOp.MAX)

    def gather(self, obj: Any) -> List[Any]:
        """Every rank's ``obj``, in rank order (on every rank)."""
        if not self.active:
            return [obj]
        out: List[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def world() -> World:
    """The torchrun world, initialising the process group (gloo on CPU, nccl on CUDA) once."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and os.environ.get("FLATBENCH_DIST_BACKEND") != "gloo" else "gloo"
        # gloo carries the object collectives (CPU tensors) even when nccl is the device backend.
        dist.init_process_group(backend="gloo" if backend == "gloo" else "cpu:gloo,cuda:nccl")
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
