"""Stopping a cell between batches: SIGTERM and SIGINT set a :class:`StopRequest`, which the
command passes to the crafting stage; crafting checks it before each batch and raises
:class:`Stop`, keeping the finished batches, so that a rerun or a requeue resumes the cell."""
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

    def request(self, name: str) -> None:
        self.signal = name

    def check(self, where: str) -> None:
        """Raise :class:`Stop` when a stop was requested (``where``: e.g. 'before batch 0:64')."""
        if self.signal:
            raise Stop(f"stopped by {self.signal} {where}")

    def install(self) -> "StopRequest":
        """Route SIGTERM and SIGINT here, and log submitit's requeue signal before it acts."""

        def on_signal(signum, frame):
            self.request(signal.Signals(signum).name)
            log.warning("%s received: stopping after the current batch (finished batches are kept)", self.signal)

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        _wrap_requeue_signal()
        return self


def _wrap_requeue_signal() -> None:
    """Under submitit (SLURM), USR2 announces the time limit (or a preemption): submitit's own
    handler requeues the job and exits at once. Log first, in the cell's log, what is kept."""
    usr2 = getattr(signal, "SIGUSR2", None)
    prev = signal.getsignal(usr2) if usr2 is not None else None
    if not callable(prev) or getattr(prev, "flatbench_wrapped", False):
        return

    def on_usr2(signum, frame):
        log.warning("SIGUSR2 (time limit or preemption): submitit requeues this cell now; its finished batches are "
                    "kept and the requeued job resumes from them (the batch in progress is recomputed)")
        prev(signum, frame)

    on_usr2.flatbench_wrapped = True
    signal.signal(usr2, on_usr2)
