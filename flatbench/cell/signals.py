"""Stopping a cell: SIGTERM and SIGINT set a :class:`StopRequest`, which the command passes to the
crafting stage; the batch in progress pauses after its current step (its loop state is kept beside the
finished batches) and crafting raises :class:`Stop`, so that a rerun or a requeue resumes the cell,
the paused batch from its step. SIGUSR2 (submitit's time limit) does the same before requeuing."""
from __future__ import annotations

import logging
import signal
from typing import Optional

log = logging.getLogger("flatbench")

EXIT_STOPPED = 143  # 128 + SIGTERM: the cell did not finish; its finished batches are kept


class Stop(Exception):
    """Raised between batches when SIGTERM/SIGINT asked the cell to stop (finished batches are kept)."""


class StopRequest:
    """Whether a signal asked the cell to stop, and which."""

    def __init__(self) -> None:
        self.signal: Optional[str] = None
        self.crafting = False       # set by the crafting stage: a batch can pause between its steps
        self.requeue = None         # submitit's requeue, deferred by SIGUSR2 until the batch in progress is kept

    def request(self, name: str) -> None:
        self.signal = name

    def requested(self) -> bool:
        """Whether a signal asked the cell to stop (the attack loop's ``pause``)."""
        return self.signal is not None

    def check(self, where: str) -> None:
        """Raise :class:`Stop` when a stop was requested (``where``: e.g. 'before batch 0:64')."""
        if self.signal:
            raise Stop(f"stopped by {self.signal} {where}")

    def install(self) -> "StopRequest":
        """Route SIGTERM and SIGINT here, and log submitit's requeue signal before it acts."""

        def on_signal(signum, frame):
            self.request(signal.Signals(signum).name)
            log.warning("%s received: stopping; the batch in progress pauses after its current step (its state and "
                        "the finished batches are kept)", self.signal)

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        self._wrap_requeue_signal()
        return self

    def _wrap_requeue_signal(self) -> None:
        """Under submitit (SLURM), USR2 announces the time limit (or a preemption), and submitit's own
        handler requeues the job and exits. While a batch is crafting, that waits: the batch pauses
        after its current step, its state is kept, then the job is requeued, and the requeued job
        continues the batch from that step. A batch longer than an allocation still advances."""
        usr2 = getattr(signal, "SIGUSR2", None)
        prev = signal.getsignal(usr2) if usr2 is not None else None
        if not callable(prev) or getattr(prev, "flatbench_wrapped", False):
            return

        def on_usr2(signum, frame):
            if not self.crafting:
                log.warning("SIGUSR2 (time limit or preemption): submitit requeues this cell now; its finished "
                            "batches are kept and the requeued job resumes from them")
                prev(signum, frame)
                return
            log.warning("SIGUSR2 (time limit or preemption): the batch in progress pauses after its current step and "
                        "keeps its state, then submitit requeues this cell, which resumes from there")
            self.requeue = lambda: prev(signum, frame)
            self.request("SIGUSR2")

        on_usr2.flatbench_wrapped = True
        signal.signal(usr2, on_usr2)
