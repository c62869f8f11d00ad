"""The Hydra job around one cell: where it writes, which sweep it belongs to, the stop
request its signals set, and :func:`cell_task`, the wrapper that does the cross-cutting work
(signals, error records, one-line errors, exit 143 on a stop) so that the task itself reads
as its stages (:func:`flatbench.entry.cli.task`)."""
from __future__ import annotations

import functools
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from flatbench.entry.errors import CellFailed, expected_errors, full_error, guarded, one_line, stopped
from flatbench.entry.failures import ERROR_FILE, record_error
from flatbench.core.registry import ConfigError
from flatbench.cell.signals import Stop, StopRequest

log = logging.getLogger("flatbench")


@dataclass
class Job:
    world: Any                  # flatbench.cell.dist.World
    out_dir: Path               # the cell directory (rank 0's under torchrun)
    multirun: bool
    num: Optional[int]          # the job number in a sweep
    overrides: List[str]        # what made this cell (the swept settings among them)
    sweep_dir: Optional[str]    # the sweep directory, for multiruns
    stop: StopRequest
    grad_evals: int = 0         # what the cell crafted now (set by the task; the sweep's progress line)
    craft_seconds: Optional[float] = None   # the seconds it spent crafting them (None: not known)

    def record(self) -> Dict[str, Any]:
        """What an error record and a failure message say about the job."""
        return {"multirun": self.multirun, "num": self.num, "overrides": self.overrides, "sweep_dir": self.sweep_dir,
                "cell_dir": str(self.out_dir)}


def current_job() -> Job:
    """The running Hydra job, with signals routed to its stop request."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from flatbench.cell.dist import world
    from flatbench.core.heap import keep_heap

    keep_heap()   # a submitit task runs the job without flatbench's main (flatbench/core/heap.py)
    stop = StopRequest().install()
    w = guarded(world)
    if not w.main:
        _own_log_file(w.rank)
    hc = HydraConfig.get()
    # Under torchrun every rank must write into rank 0's directory (timestamps may differ).
    out_dir = Path(w.broadcast(str(hc.runtime.output_dir)))
    multirun = hc.mode == RunMode.MULTIRUN
    return Job(w, out_dir, multirun, hc.job.get("num"), list(hc.overrides.task),
               str(Path(hc.sweep.dir).resolve()) if multirun else None, stop)


def _own_log_file(rank: int) -> None:
    """Ranks > 0 log to ``<job>.rank<r>.log`` beside rank 0's ``<job>.log`` (Hydra opened the same
    file in every rank): each rank's log reads as what that rank did."""
    import logging

    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, logging.FileHandler):
            path = Path(h.baseFilename)
            mine = logging.FileHandler(path.with_name(f"{path.stem}.rank{rank}{path.suffix}"), mode=h.mode,
                                       encoding=h.encoding)
            mine.setLevel(h.level)
            mine.setFormatter(h.formatter)
            for f in h.filters:
                mine.addFilter(f)
            root.removeHandler(h)
            h.close()
            root.addHandler(mine)


def check_tasks(job: Job) -> None:
    """A launcher that starts K > 1 tasks per cell (``hydra.launcher.tasks_per_node`` x ``nodes``)
    must have given them the variables of one K-process group (torchrun's, or a SLURM step's):
    otherwise each task would run the whole cell, K copies writing into one directory. Checked
    before anything is crafted."""
    from hydra.core.hydra_config import HydraConfig

    if not job.multirun:
        return   # a single run ignores hydra.launcher
    launcher = HydraConfig.get().get("launcher") or {}
    per_node = launcher.get("tasks_per_node")
    if per_node is None:
        return
    nodes = launcher.get("nodes") or 1
    want = int(per_node) * int(nodes)
    if want > 1 and job.world.size != want:
        found = (f"a group of {job.world.size}" if job.world.active else
                 "no process group (no WORLD_SIZE from torchrun, no SLURM step of several tasks)")
        raise ConfigError(f"hydra.launcher.tasks_per_node={per_node}" + (f" x nodes={nodes}" if nodes != 1 else "") +
                          f" starts {want} tasks for this cell, but this task found {found}: each task would run the "
                          f"whole cell; on SLURM use hydra/launcher=slurm_ddp (or any submitit_slurm launcher), "
                          f"elsewhere hydra.launcher.tasks_per_node=1 (one cell per task) or torchrun")


def _progress(job: Job, ok: bool, seconds: float, grad_evals: int, craft_seconds: Optional[float] = None) -> None:
    """The sweep's progress line after this cell (see :mod:`flatbench.entry.sweep_progress`)."""
    if not job.multirun or not job.world.main or job.sweep_dir is None:
        return
    from flatbench.entry.sweep_progress import record_progress

    line = record_progress(job.sweep_dir, job.overrides, ok, seconds, grad_evals, craft_seconds)
    if line:
        print(line, file=sys.stderr, flush=True)


def cell_task(body: Callable[[Any, Job], Optional[float]]):
    """``body(cfg, job)`` with the cross-cutting work around it: a fresh error record; one line
    for an expected error (in a sweep the failed cell is recorded and the others run); exit 143
    on a stop; a bug keeps its traceback."""

    @functools.wraps(body)
    def task(cfg):
        job = current_job()
        if job.world.main:
            (job.out_dir / ERROR_FILE).unlink(missing_ok=True)
        t0 = time.perf_counter()
        try:
            check_tasks(job)
            objective = body(cfg, job)
            _progress(job, True, time.perf_counter() - t0, job.grad_evals, job.craft_seconds)
            return objective
        except Stop as exc:
            if job.stop.requeue is not None:   # SIGUSR2 waited for the batch in progress to be kept
                log.warning("%s; submitit requeues this cell now", exc)
                job.stop.requeue()
            stopped(exc)  # the whole sweep stops (exit 143), as a single cell does: a requeue or rerun resumes it
        except Exception as exc:  # noqa: BLE001 - recorded in the cell dir, then reported or re-raised
            cell = job.record()
            where = None
            if job.world.main:
                try:
                    where = record_error(job.out_dir, exc, cell)
                except OSError:
                    pass  # an unwritable cell dir is itself the error being reported
            exc.flatbench_cell = cell
            _progress(job, False, time.perf_counter() - t0, 0)
            if not isinstance(exc, expected_errors()) or full_error():
                raise  # a bug, or a traceback asked for: Hydra records the job as failed and shows it
            if not job.multirun:
                print(f"flatbench: error: {one_line(exc)}", file=sys.stderr)
                sys.exit(1)
            print(f"flatbench: cell {job.num} failed: {one_line(exc)}" + (f" (details in {where})" if where else ""),
                  file=sys.stderr)
            # Raised, not exited: Hydra records the failed job and runs the remaining cells.
            failed = CellFailed(one_line(exc))
            failed.flatbench_cell = cell
            raise failed from None

    return task
