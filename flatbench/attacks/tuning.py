"""How the attack loop sizes its work: the chunk (images in one forward/backward; PGN's N·B
neighbours are split into chunks) and the surrogate's memory format.

What the choice changes: speed and memory, and the floating-point summation order. The noise is
keyed per neighbour, never per chunk, so the attack is the same; but another batch size selects
other kernels, and channels_last sums in another order, which can flip the sign of a near-zero
gradient component and move a pixel by a step (scripts/chunk_numerics.py; one run saw 205 of
98,304 pixels move when a loaded machine measured chunk 1 instead of 64). So the defaults are
chosen by rule, from facts that do not depend on what else the machine is doing:

- ``chunk="auto"`` (the default): :func:`rule_chunk`, the largest power of two whose saved
  activations (counted exactly per image, :func:`bytes_per_image`) fit a share of the device's
  total (not free) memory: RULE_CPU_SHARE of the machine's on a CPU, RULE_GPU_SHARE of the
  card's on a GPU, or ``memory_budget_mb`` when set; at most :func:`rule_cap` images (on a CPU
  one per RULE_CPU_MIB_PER_IMAGE of total memory: 64 on a 24 GiB machine; 256 on CUDA).
- ``channels_last="auto"`` (the default): :func:`rule_channels_last`, channels_last on a CPU,
  contiguous on CUDA.

The same command on the same machine then crafts the same images, whatever else runs on it.
Timed tuning is there on request: ``chunk="measure"`` / ``channels_last="measure"`` time
the candidates once per (architecture, input shape, device type, amp, limit) and keep the
outcome in a JSON file (``FLATBENCH_TUNING_FILE``; the command line's ``paths.tuning_file``),
under a file lock, so the cells of a machine never measure at the same time, and all take the
first measurement's choice, timing chunks 1, 2, 4, ... until doubling stops paying (the rules
above ``search_chunks``). The resolved choice is recorded with every result (columns ``chunk``
and ``memory_format``); a resumed cell keeps its finished batches' choice, and the ranks of a
distributed cell take rank 0's.
"""
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

from ..io import locked, merge_json, read_json
from .model_state import set_memory_format

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


def bytes_per_image(model: nn.Module, x: torch.Tensor, amp: Optional[str] = None) -> int:
    """Memory one more image needs in a forward/backward: the tensors autograd saves for the
    backward (plus the input, its gradient and the output), counted exactly with saved-tensor
    hooks, for two images less one. What every image of a forward shares (the weights a layer
    saves for its input gradient, autocast's copies of them) is there once per forward, not per
    image: counting one image alone had ResNet-18 at 64x64 need 47 MB per image, 45 MB of it its
    weights, and the CPU rule chose chunk 16 where 64 ran 30% faster."""
    return max(1, _saved_bytes(model, x, 2, amp) - _saved_bytes(model, x, 1, amp))


def _saved_bytes(model: nn.Module, x: torch.Tensor, n: int, amp: Optional[str]) -> int:
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    z = x[:1].detach().repeat(n, *[1] * (x.dim() - 1)).requires_grad_(True)
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast(
            device_type=x.device.type, dtype=torch.float16 if amp == "fp16" else torch.bfloat16, enabled=bool(amp)):
        out = model(z)
    return total[0] + 2 * z.numel() * z.element_size() + out.numel() * out.element_size()


# The rule behind the defaults, from measurements (docs/benchmarks.md, scripts/cpu_rule.py), sized
# from total memory, never free memory (which depends on what else runs):
# - CPU: one forward's saved activations within RULE_CPU_SHARE of the machine's memory (377 MiB of
#   23.5 GiB), at most one image per RULE_CPU_MIB_PER_IMAGE of it (64 there), channels_last. On 2
#   cores PGN ran fastest at chunks 64-128 on the digits models and ResNet-18 at 64 px (chunk 256
#   contiguous took 1.7x as long), at 8 on ResNet-18 at 224 px (32 MB an image; 16 and 32 slower):
#   the CPU's caches favour small forwards, so the share is small.
# - CUDA: at most 256 within half the card's memory, contiguous: on an H200 the bare limit of
#   ResNet-50 and Inception-v3 was fastest contiguous, and PGN in channels_last ran at 0.78 of it.
RULE_CPU_SHARE = 1 / 64
RULE_CPU_MIB_PER_IMAGE = 256
RULE_GPU_SHARE = 0.5
RULE_MAX = {"cpu": (16, 256), "cuda": (256, 256)}   # the cap's floor and ceiling (CPU: from total memory)
RULE_CHANNELS_LAST = {"cpu": True, "cuda": False}


def total_memory(device: torch.device) -> int:
    """The device's total memory in bytes: the card's on CUDA, the machine's physical memory on a CPU."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _pow2_floor(n: float) -> int:
    return 1 << (max(1, int(n)).bit_length() - 1)


def rule_cap(device: torch.device, total: Optional[int] = None) -> int:
    """The most images the rule puts in one forward: 256 on CUDA; on a CPU one per
    RULE_CPU_MIB_PER_IMAGE of total memory, a power of two between 16 and 256."""
    low, high = RULE_MAX.get(device.type, RULE_MAX["cpu"])
    per = (total_memory(device) if total is None else total) / (RULE_CPU_MIB_PER_IMAGE * 2 ** 20)
    return high if device.type == "cuda" else min(high, max(low, _pow2_floor(per)))


def rule_budget(device: torch.device, total: Optional[int] = None) -> float:
    """Bytes the saved activations of one forward may take: a share of the device's total memory."""
    total = total_memory(device) if total is None else total
    return (RULE_GPU_SHARE if device.type == "cuda" else RULE_CPU_SHARE) * total


def rule_chunk(device: torch.device, bytes_per_image: Callable[[], int], budget_mb: Optional[float] = None,
               total: Optional[int] = None) -> int:
    """The default chunk: the largest power of two ≤ :func:`rule_cap` whose saved activations fit
    :func:`rule_budget` (or ``budget_mb``). ``total``: the memory to size for (None: the device's)."""
    budget = budget_mb * 2 ** 20 if budget_mb is not None else rule_budget(device, total)
    return min(rule_cap(device, total), _pow2_floor(budget // max(1, bytes_per_image())))


def rule_channels_last(device: torch.device) -> bool:
    """The default memory format for images on ``device`` (RULE_CHANNELS_LAST)."""
    return RULE_CHANNELS_LAST.get(device.type, False)


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


def memory_limit(device: torch.device, bytes_per_image: Callable[[], int]) -> Optional[int]:
    """The timed search's upper bound on a GPU with no memory budget set: the largest chunk whose
    saved activations take half of the memory free now (the rest: weights, workspaces, the allocator's fragmentation).
    None on a CPU, where the per-image size (one extra forward) is then never computed."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, int(0.5 * free // max(1, bytes_per_image())))


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


class Sizing:
    """How an attack sizes its work, apart from the loop: the chunk (the most images in one
    forward/backward: by rule with "auto", timed with "measure", an integer, or None for no limit;
    lowered to fit ``memory_budget_mb``) and the surrogate's memory format (by rule, timed, or as
    given), or both pinned (a resumed cell, a torchrun rank). The memory one image needs is
    measured once per input shape, device type and precision."""

    def __init__(self, chunk="auto", memory_budget_mb: Optional[float] = None, channels_last="auto",
                 amp: Optional[str] = None, tuning_file=None):
        self.chunk_setting = None if chunk is None else (chunk if chunk in ("auto", "measure") else int(chunk))
        self.memory_budget_mb = None if memory_budget_mb is None else float(memory_budget_mb)
        self.channels_last, self.amp, self.tuning_file = channels_last, amp, tuning_file
        self.pinned: Optional[Tuple[Optional[int], str]] = None
        self.memory_format: Optional[str] = None  # the format in force, settled on the first call
        self._bytes: Dict = {}

    def bytes_per_image(self, model: nn.Module, x: torch.Tensor) -> int:
        key = ("bytes", tuple(x.shape[1:]), x.device.type, self.amp)
        if key not in self._bytes:
            self._bytes[key] = bytes_per_image(model, x, self.amp)
        return self._bytes[key]

    def resolve(self, model: nn.Module, loss: Callable, x: torch.Tensor) -> Optional[int]:
        """The chunk for inputs like ``x``; puts ``model`` (borrowed by the caller) in the chosen format."""
        images = x.dim() == 4
        if self.pinned is not None:
            chunk, fmt = self.pinned
            self.memory_format = fmt if images else "contiguous"
            set_memory_format(model, self.memory_format == "channels_last")
            return chunk
        budget_cap = None
        if self.memory_budget_mb is not None:
            budget_cap = max(1, int(self.memory_budget_mb * 2 ** 20 // self.bytes_per_image(model, x)))
        cl = rule_channels_last(x.device) if self.channels_last == "auto" else self.channels_last  # or "measure"
        if "measure" in (self.chunk_setting, cl):
            limit = (self.chunk_setting if isinstance(self.chunk_setting, int) else None) or budget_cap or memory_limit(
                x.device, lambda: self.bytes_per_image(model, x)) or 1024
            choice = choose(model, loss, x, limit, cl, self.amp, self.tuning_file)
            chunk = int(choice["chunk"]) if self.chunk_setting == "measure" else None
            cl = bool(choice["channels_last"])   # the timed choice, or the format it was timed in
        self.memory_format = "channels_last" if cl and images else "contiguous"
        set_memory_format(model, self.memory_format == "channels_last")
        if self.chunk_setting == "measure":
            return chunk
        if self.chunk_setting == "auto":
            return rule_chunk(x.device, lambda: self.bytes_per_image(model, x), self.memory_budget_mb)
        if self.chunk_setting is None:
            return budget_cap
        return self.chunk_setting if budget_cap is None else min(self.chunk_setting, budget_cap)

    def pin(self, chunk: Optional[int], memory_format: str) -> None:
        if memory_format not in ("contiguous", "channels_last"):
            raise ValueError(f"memory_format must be contiguous or channels_last, got {memory_format!r}")
        self.pinned = (None if chunk is None else int(chunk), memory_format)
