"""The process heap for the attack loop (glibc's malloc, on Linux).

An attack allocates and frees the same few activation tensors thousands of times: a 64-image
batch through the digits ResNet needs tensors of 1-16 MiB at every layer. glibc serves such sizes
with mmap and hands them back with munmap on free (its threshold adapts, but differently in each
process, depending on what the process allocated before), so every step touches fresh pages:
measured 1,660 to 5,986 minor page faults per forward+backward on the 2-core machine, and the
process's speed wandering with them (2,500 to 3,300 gradient evaluations/s). Keeping
those blocks in the heap (``M_MMAP_THRESHOLD`` = 32 MiB, glibc's largest) and not trimming the heap
back below 512 MiB after each step removes the faults (about 30 per step) and the wander.

Applied by the command line, in its own process (:func:`flatbench.entry.cli.main`, and in each SLURM or
submitit task, :func:`flatbench.entry.job.current_job`); never by the API, which does not change the
process of the notebook it runs in. A notebook gets the same with glibc's own variables, set
before Python starts: ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=536870912``.
``FLATBENCH_HEAP=default`` leaves malloc as it is.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger("flatbench")

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3   # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 * 2 ** 20                  # glibc's maximum on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD = 512 * 2 ** 20

_applied = False


def keep_heap() -> bool:
    """Set glibc's mmap and trim thresholds for this process (once); False where there is no
    glibc (macOS, musl) or FLATBENCH_HEAP=default."""
    global _applied
    if _applied:
        return True
    if os.environ.get("FLATBENCH_HEAP", "").lower() == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    _applied = ok
    log.debug("heap: mmap threshold %d MiB, trim threshold %d MiB: %s", MMAP_THRESHOLD >> 20, TRIM_THRESHOLD >> 20,
              "set" if ok else "refused by mallopt")
    return ok
