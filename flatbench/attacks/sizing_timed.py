"""Timed sizing, on request (``chunk="measure"``, ``channels_last="measure"``): the candidate chunks and
memory formats timed once per (architecture, input shape, device type, amp, limit), and the choice
kept in the tuning file (``FLATBENCH_TUNING_FILE``; the command line's ``paths.tuning_file``) under a
file lock, so that the cells of a machine never measure at the same time and all take the first
measurement's choice. The defaults are rules, not timings (:mod:`.sizing` says why)."""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import nn

from flatbench.attacks.model_state import set_memory_format
from flatbench.core.io import locked, merge_json, read_json

log = logging.getLogger("flatbench")
ENV_FILE = "FLATBENCH_TUNING_FILE"
_PROCESS: Dict[str, Dict[str, Any]] = {}  # key -> {"chunk", "channels_last", "rate", ...}


def arch_key(model: nn.Module) -> str:
    """The model's architecture (its class and its parameter and buffer shapes), not its
    weights: the timings depend on the first only."""
    h = hashlib.sha256(type(model).__name__.encode())
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
    return f"{type(model).__name__}-{h.hexdigest()[:12]}"


# Why the measurement stops where it does (chunk=measure; it must stay cheap, since a cell pays it):
# - a chunk whose forward+backward already takes CALL_S seconds is not doubled: the per-call
#   costs that larger chunks amortise (Python, dispatch, kernel launches) are then well under
#   1% of a call, so doubling can only gain through kernel efficiency, and costs twice the time;
# - two doublings in a row that gain less than 5% over the best so far end the search (the
#   plateau on a GPU, or the cache-size decline on a CPU);
# - BUDGET_S bounds the whole search of one memory format.
CALL_S = 1.0
BUDGET_S = 8.0
GAIN = 1.05
WITHIN = 0.97  # the smallest chunk within 3% of the fastest is chosen: the same speed in less memory


def _rate(model: nn.Module, loss: Callable, x: torch.Tensor, b: int, channels_last: bool,
          amp: Optional[str]) -> Tuple[float, float]:
    """Images per second of forward + input gradient at chunk b, and the seconds one call took.
    The first call of a shape pays one-off costs (kernel selection, allocation) and is not
    counted; two more calls are timed (the faster counts), one when a call takes 0.5 s or more."""
    z = x[:1].detach().repeat(b, *[1] * (x.dim() - 1))
    y = torch.zeros(b, dtype=torch.long, device=x.device)

    def call() -> float:
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        t0 = time.perf_counter()
        with torch.enable_grad():
            zz = z.clone().requires_grad_(True)
            zin = zz.contiguous(memory_format=torch.channels_last) if channels_last and zz.dim() == 4 else zz
            if amp:
                with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16):
                    out = model(zin)
            else:
                out = model(zin)
            torch.autograd.grad(loss(out.float(), y), zz)
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        return time.perf_counter() - t0

    first = call()
    times = [call() for _ in range(1 if first >= 0.5 else 2)]
    return b / max(min(times), 1e-9), max(first, min(times))


def search_chunks(timer: Callable[[int], Tuple[float, float]], limit: int, call_s: float = CALL_S,
                  budget_s: float = BUDGET_S) -> Tuple[int, float, Dict[int, float]]:
    """Chunks 1, 2, 4, ... up to ``limit`` (and the limit itself), timed by ``timer(b) -> (images/s,
    seconds per call)`` until a stopping rule above holds; returns the chosen chunk, its rate and
    every rate measured."""
    rates: Dict[int, float] = {}
    sizes = [1 << k for k in range(max(1, int(limit)).bit_length()) if (1 << k) <= limit]
    if limit not in sizes:
        sizes.append(int(limit))
    t0, best, flat = time.perf_counter(), 0.0, 0
    for b in sizes:
        rate, seconds = timer(b)
        rates[b] = rate
        flat = 0 if rate > GAIN * best else flat + 1
        best = max(best, rate)
        if flat >= 2 or seconds >= call_s or time.perf_counter() - t0 >= budget_s:
            break
    best = max(rates.values())
    chunk = min(b for b, r in rates.items() if r >= WITHIN * best)
    return chunk, rates[chunk], rates


def measure(model: nn.Module, loss: Callable, x: torch.Tensor, limit: int, formats: Tuple[bool, ...],
            amp: Optional[str] = None) -> Dict[str, Any]:
    """Time the candidate chunks in each memory format (False: contiguous, True: channels_last);
    channels_last is chosen only when more than 3% faster (contiguous is what users expect)."""
    results = {}
    for cl in formats:
        set_memory_format(model, cl)
        results[cl] = search_chunks(lambda b: _rate(model, loss, x, b, cl, amp), limit)
    # Formats are compared by their best rates (the chosen chunk may sit up to 3% below its best).
    best = {cl: max(r[2].values()) for cl, r in results.items()}
    pick = True if True in results and (False not in results or best[True] > 1.03 * best[False]) else False
    set_memory_format(model, pick)
    chunk, rate, _ = results[pick]
    return {"chunk": int(chunk), "channels_last": bool(pick), "rate": round(float(rate), 2),
            "rates": {("channels_last" if k else "contiguous"): round(float(v[1]), 2) for k, v in results.items()},
            "timed": {("channels_last" if k else "contiguous"): {str(b): round(r, 1) for b, r in v[2].items()}
                      for k, v in results.items()}}


def tuning_file(path: Optional[Path] = None) -> Optional[Path]:
    if path is not None:
        return Path(path)
    env = os.environ.get(ENV_FILE)
    return Path(env) if env else None


def choose(model: nn.Module, loss: Callable, x: torch.Tensor, limit: int, memory_format: Any,
           amp: Optional[str] = None, path: Optional[Path] = None) -> Dict[str, Any]:
    """The timed chunk and memory format for inputs like ``x``: from this process's cache, else
    the tuning file, else measured now (and written to both). ``memory_format``: "measure" (time
    both), True (channels_last) or False (contiguous). With a tuning file the lookup and the
    measurement run under its lock: a second process waits, then reads the first's choice, so
    two cells never measure at the same time and reach different choices. Leaves the model in
    the chosen format (inside :func:`.model_state.borrowed`, which undoes it)."""
    formats = (False, True) if memory_format == "measure" and x.dim() == 4 else (bool(memory_format) and x.dim() == 4,)
    key = "|".join([arch_key(model), "x".join(map(str, x.shape[1:])), x.device.type, str(amp), str(limit),
                    {(False, True): "measure", (True,): "channels_last", (False,): "contiguous"}[formats]])
    path = tuning_file(path)
    if key not in _PROCESS:
        with _lock(path):
            stored = read_json(path).get(key) if path is not None else None
            if isinstance(stored, dict) and {"chunk", "channels_last"} <= set(stored):
                _PROCESS[key] = stored
                log.info("tuning: chunk %d, %s for %s (from %s, measured %s)", stored["chunk"],
                         "channels_last" if stored["channels_last"] else "contiguous", key.split("|")[0], path,
                         stored.get("measured", "?"))
            else:
                t0 = time.perf_counter()
                found = measure(model, loss, x, limit, formats, amp)
                found["measured"] = time.strftime("%Y-%m-%d %H:%M:%S")
                found["seconds"] = round(time.perf_counter() - t0, 2)
                _PROCESS[key] = found
                if path is not None:
                    _write(path, key, found)
                log.info("tuning: measured in %.1f s: chunk %d, %s (%s images/s) for %s%s", time.perf_counter() - t0,
                         found["chunk"], "channels_last" if found["channels_last"] else "contiguous",
                         ", ".join(f"{k} {v:g}" for k, v in found["rates"].items()), key.split("|")[0],
                         f"; kept in {path}" if path is not None else "")
    choice = _PROCESS[key]
    set_memory_format(model, bool(choice["channels_last"]))
    return choice


def _lock(path: Optional[Path]):
    """The tuning file's lock; none without a file, or where it cannot be created (a read-only
    cache still runs, measuring once per process)."""
    if path is None:
        return contextlib.nullcontext()
    lock = path.with_name(f".{path.name}.lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        lock.touch()
    except OSError:
        return contextlib.nullcontext()
    return locked(lock)


def _write(path: Path, key: str, value: Dict[str, Any]) -> None:
    """Merge one entry into the tuning file (the caller holds its lock; read again just before)."""
    try:
        merge_json(path, lambda data: {**data, key: value})
    except OSError:
        pass  # a read-only cache still runs, measuring once per process
