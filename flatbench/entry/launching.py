"""Hydra's and submitit's side of a run: Hydra's run_and_report with flatbench's one-line errors and
the sweep's failure summary, submitit's sacct warning said once, and a job that left the queue without
a task's result counted as a failed cell instead of awaited for ever (:func:`follow_lost_tasks`)."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from flatbench.entry.errors import CellFailed, composition_error, expected_errors, one_line
from flatbench.entry.failures import START, record_error, sweep_summary
from flatbench.core.layout import CellLayout


def compact_run_and_report(func):
    """Hydra's run_and_report, but a composition error becomes one line on stderr (exit 1);
    HYDRA_FULL_ERROR=1 or hydra.verbose=true keeps Hydra's full report."""
    try:
        return func()
    except Exception as exc:  # noqa: BLE001 - everything Hydra would report
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        cell = getattr(exc, "flatbench_cell", None)
        if cell and cell.get("multirun"):
            summary = sweep_summary(Path(cell["sweep_dir"]), START["time"])
            if summary:
                print(summary, file=sys.stderr)
            if isinstance(exc, CellLost):
                print(f"flatbench: error: {exc}", file=sys.stderr)
            if isinstance(exc, CellFailed):
                sys.exit(1)
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or any(a.startswith("hydra.verbose=") and not a.endswith("=false")
                                                            for a in sys.argv):
            raise
        if type(exc).__name__ == "FailedJobError" and "sbatch" in str(exc):
            # submitit could not submit (no SLURM here, or its config not found): one line.
            hint = ("; no SLURM configuration found: on the local cluster run `eval \"$(scripts/slurm_local.sh env)\"` "
                    "first" if "configuration source" in str(exc) else "")
            print(f"flatbench: error: sbatch failed: {' '.join(str(exc).split())}{hint}", file=sys.stderr)
            sys.exit(1)
        # Composition errors (Hydra's, OmegaConf's, flatbench's checks) are one line; a bug keeps its traceback.
        if not isinstance(exc, (HydraException, OmegaConfBaseException, *expected_errors())):
            raise
        print(f"flatbench: error: {composition_error(exc)}", file=sys.stderr)
        sys.exit(1)


class OnceSacctWarning(logging.Filter):
    """On a cluster without accounting (scripts/slurm_local.sh) submitit's every poll warns that
    sacct failed; it then waits for the jobs' result files, which works. Say it once."""

    seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "Bypassing sacct error" not in record.getMessage():
            return True
        if OnceSacctWarning.seen:
            return False
        OnceSacctWarning.seen = True
        record.msg, record.args = ("sacct is not available (no accounting on this cluster?): submitit follows the jobs "
                                   "through their result files instead (further sacct warnings hidden)"), ()
        return True


QUEUE_POLL_S = 20.0   # without sacct: how often the launching terminal asks scontrol about its jobs


class CellLost(CellFailed):
    """A cell whose job left the queue without a result from one of its tasks (a rank killed from outside,
    a node lost): nothing will ever write that result, so the sweep counts the cell as failed."""


def queue_states(job_ids) -> dict:
    """job id -> its state by ``scontrol show job`` (FAILED, RUNNING, ...), ``LEFT_QUEUE`` for a job the
    controller no longer knows; ids it could not ask about are left out."""
    import re
    import subprocess

    states = {}
    for job_id in job_ids:
        try:
            p = subprocess.run(["scontrol", "-o", "show", "job", str(job_id)], capture_output=True, text=True,
                               timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        m = re.search(r"\bJobState=(\w+)", p.stdout)
        if m:
            states[job_id] = m.group(1)
        elif "Invalid job id" in p.stderr:
            states[job_id] = "LEFT_QUEUE"
    return states


def follow_lost_tasks() -> None:
    """In the terminal that launches a SLURM sweep. submitit follows its jobs through sacct; on a cluster
    without accounting every call fails, the jobs stay UNKNOWN, and a job whose task died before writing
    its result is awaited for ever. Here, when sacct gives no state, scontrol does (every QUEUE_POLL_S);
    once the job has left the queue, submitit waits its grace period (15 s) for the result files, and a
    task without one becomes a failed cell (:class:`CellLost`) instead of a hang: Hydra then waits for
    the other cells and the sweep ends with its summary and exit 1."""
    import time

    from submitit.core import core, utils
    from submitit.slurm import slurm

    watcher = slurm.SlurmInfoWatcher
    if getattr(watcher.update, "flatbench", False):
        return
    update, update_if_long_enough, results = watcher.update, watcher.update_if_long_enough, core.Job.results

    def update_with_queue(self) -> None:
        update(self)
        # Jobs sacct said nothing of, and jobs whose last state came from scontrol (sacct kept failing).
        asked = getattr(self, "_flatbench_asked", set())
        unknown = [j for j in self._registered - self._finished
                   if j in asked or not self._info_dict.get(j, {}).get("State")]
        for job_id, state in queue_states(unknown).items():
            self._info_dict[job_id] = {"JobID": job_id, "State": state, "NodeList": ""}
            asked.add(job_id)
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)
        self._flatbench_asked = asked
        self._flatbench_queue = bool(unknown)

    def poll_often_without_sacct(self, mode: str) -> None:
        if mode == "standard" and getattr(self, "_flatbench_queue", False) \
                and time.time() - self._last_status_check > QUEUE_POLL_S:
            mode = "force"
        update_if_long_enough(self, mode)

    def results_or_lost(self):
        if not self._sub_jobs:
            try:
                return results(self)
            except utils.UncompletedJobError as exc:
                return [_lost(self, exc)]
        self.wait()
        out = []
        for sub in self._sub_jobs:
            try:
                out.append(sub.result())
            except utils.UncompletedJobError as exc:
                out.append(_lost(sub, exc))
                for other in self._sub_jobs:   # the grace is the job's, not each task's
                    other._results_timeout_s = 0
        return out

    update_with_queue.flatbench = True
    watcher.update, watcher.update_if_long_enough, core.Job.results = \
        update_with_queue, poll_often_without_sacct, results_or_lost


def _lost(job, exc: Exception):
    """What Hydra gets for a task that left no result: a failed job return whose error names the job and
    the task and carries the sweep directory, so that the sweep's summary is printed."""
    from hydra.core.utils import JobReturn, JobStatus



    state = job.watcher.get_state(job.job_id, mode="cache")
    lost = CellLost(f"job {job.job_id}, task {job.task_id}, left the queue ({state}) without a result: its "
                    "cell is counted as failed; its finished batches are kept, rerun the sweep to resume it")
    sweep_dir = Path(job.paths.folder).parent.parent
    lost.flatbench_cell = {"multirun": True, "sweep_dir": str(sweep_dir)}
    logging.getLogger("flatbench").error("%s (%s)", lost, one_line(exc)[:200])
    ret = JobReturn()
    try:   # Hydra's launcher submits (overrides, "hydra.sweep.dir", job number, job id, state)
        overrides, num = job.submission().args[0], job.submission().args[2]
    except Exception:  # noqa: BLE001 - another submitter: the cell is still failed, only unnamed
        overrides, num = None, None
    ret.overrides = overrides
    cell_dir = sweep_dir / str(num)
    error = cell_dir / CellLayout.ERROR
    if num is not None and cell_dir.is_dir() and not (error.exists() and error.stat().st_mtime >= (START["time"] or 0)):
        record_error(cell_dir, lost, {"num": num, "multirun": True})   # so that the sweep's summary names it
    ret.status, ret.return_value = JobStatus.FAILED, lost
    return ret
