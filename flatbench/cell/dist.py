"""Data-parallel cells: one process per device, batches dealt out by rank.

Two ways start K processes of one cell, and both form one torch.distributed group:

- ``torchrun --nproc-per-node=K -m flatbench ...``: torchrun sets RANK, WORLD_SIZE, LOCAL_RANK,
  MASTER_ADDR and MASTER_PORT.
- a SLURM job step of K tasks (``hydra/launcher=slurm_ddp``, or ``hydra.launcher.tasks_per_node=K``
  with any submitit_slurm launcher; also a hand-written ``srun -n K flatbench ...``): the group is
  formed from SLURM's own variables (:func:`slurm_world`). They are read here rather than through
  submitit's ``TorchDistributedEnvironment`` because that helper exists only inside a submitit job,
  while SLURM's variables exist in every task ``srun`` starts, submitit's included: one rule for
  both.

Each rank crafts the groups of batches g with g % K == rank (a group: the batches crafted together
in one call, :mod:`flatbench.attacks.packing`; one batch where nothing is packed) and evaluates
the batches b with b % K == rank. A batch's noise is keyed by the seed and the index of its first
image (not by the rank), with the same batch boundaries and groups as a single process, so the
result is identical to a single-process run. Counts are reduced
with torch.distributed; rank 0 alone writes files and logs.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import zlib
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

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


def first_host(nodelist: str) -> str:
    """The first host of a SLURM host list: 'gpu[03-05,9],cpu1' -> 'gpu03' (zero padding kept);
    'rack[1-2]-n[07-08]' -> 'rack1-n07'."""
    depth, end = 0, len(nodelist)
    for i, ch in enumerate(nodelist):   # the first top-level comma ends the first item
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            end = i
            break
    return re.sub(r"\[([^\]]*)\]", lambda m: re.split(r"[,-]", m.group(1))[0], nodelist[:end].strip())


def node_address(name: str) -> str:
    """A SLURM node name as an address the other tasks can reach: the name itself when it resolves,
    else the node's NodeAddr as slurmctld has it (``scontrol show node``). A node name need not be a
    host name: clusters may name nodes apart from their hosts, and the two-node layout of
    scripts/slurm_local.sh runs nodes n1 and n2 as two slurmd daemons of one host. A user's
    MASTER_ADDR is taken as given (it is not a node name)."""
    if "MASTER_ADDR" in os.environ:
        return name
    try:
        socket.getaddrinfo(name, None)
        return name
    except OSError:
        pass
    try:
        out = subprocess.run(["scontrol", "show", "node", name, "-o"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return name
    found = re.search(r"\bNodeAddr=(\S+)", out)
    return found.group(1) if found else name


def slurm_world(env=os.environ) -> Optional[Tuple[int, int, int, str, int]]:
    """(rank, size, local rank, master address, master port) of the SLURM job step this process is
    a task of, when that step has more than one task; None otherwise.

    Only a task started by ``srun`` (as submitit starts each task) has SLURM_STEP_NUM_TASKS: a batch
    script that runs flatbench itself inside a K-task allocation is one process, not K. The master
    is the step's first host; the port is drawn from the job and step ids and the restart count (the
    same for every task of one run, another after a requeue, different for the cells of a job array,
    which have their own job ids), unless MASTER_ADDR or MASTER_PORT are set.
    """
    size = int(env.get("SLURM_STEP_NUM_TASKS", "1") or 1)
    if size <= 1:
        return None
    missing = [k for k in ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_JOB_ID") if k not in env]
    if missing:
        raise RuntimeError(f"SLURM step of {size} tasks without {', '.join(missing)}: cannot tell this task's rank")
    nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "localhost"
    addr = env.get("MASTER_ADDR") or first_host(nodes)
    # A requeued job (SLURM_RESTART_COUNT) takes another port: the run before it may still hold its
    # socket while it closes, and binding the same port then fails with EADDRINUSE.
    key = (f"{env['SLURM_JOB_ID']}.{env.get('SLURM_STEP_ID', env.get('SLURM_STEPID', '0'))}"
           f".{env.get('SLURM_RESTART_COUNT', '0') or '0'}").encode()
    port = int(env.get("MASTER_PORT") or 20000 + zlib.crc32(key) % 40000)
    return int(env["SLURM_PROCID"]), size, int(env["SLURM_LOCALID"]), addr, port


def _backend() -> str:
    # gloo carries the object collectives (CPU tensors) even when nccl is the device backend.
    nccl = torch.cuda.is_available() and os.environ.get("FLATBENCH_DIST_BACKEND") != "gloo"
    return "cpu:gloo,cuda:nccl" if nccl else "gloo"


def _init(**kwargs) -> None:
    """Initialise the process group, and destroy it at exit: a gloo group left to the
    interpreter's teardown could abort its rank there ("terminate called without an active
    exception", exit -6 after the cell had finished; seen under torchrun in CI)."""
    import atexit

    dist.init_process_group(backend=_backend(), **kwargs)
    atexit.register(_destroy)


def _destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world() -> World:
    """This process's world: torchrun's (WORLD_SIZE), else a multi-task SLURM step's
    (:func:`slurm_world`), else one process. Initialises the process group (gloo on CPU, nccl for
    CUDA tensors) once."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1:
        if not dist.is_initialized():
            _init()
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    step = slurm_world()
    if step is None:
        return World()
    rank, size, local_rank, addr, port = step
    if not dist.is_initialized():
        _init(init_method=f"tcp://{node_address(addr)}:{port}", rank=rank, world_size=size)
    return World(dist.get_rank(), dist.get_world_size(), local_rank)
