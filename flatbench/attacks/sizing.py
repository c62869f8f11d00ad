"""How the attack loop sizes its work, by rule: the chunk (images in one forward/backward; PGN's N·B
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
Timed sizing is there on request (:mod:`.sizing_timed`): ``chunk="measure"`` / ``channels_last="measure"`` time
the candidates once per (architecture, input shape, device type, amp, limit) and keep the
outcome in a JSON file (``FLATBENCH_TUNING_FILE``; the command line's ``paths.tuning_file``),
under a file lock, so the cells of a machine never measure at the same time, and all take the
first measurement's choice, timing chunks 1, 2, 4, ... until doubling stops paying (the rules
above ``search_chunks``). The resolved choice is recorded with every result (columns ``chunk``
and ``memory_format``); a resumed cell keeps its finished batches' choice, and the ranks of a
distributed cell take rank 0's.
"""
from __future__ import annotations

import os
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import nn

from flatbench.attacks.model_state import set_memory_format
from flatbench.attacks.sizing_timed import choose


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


def rule_activation_bytes(device: torch.device, total: Optional[int] = None) -> float:
    """Bytes the saved activations of one forward may take: a share of the device's total memory."""
    total = total_memory(device) if total is None else total
    return (RULE_GPU_SHARE if device.type == "cuda" else RULE_CPU_SHARE) * total


def rule_chunk(device: torch.device, bytes_per_image: Callable[[], int], memory_mb: Optional[float] = None,
               total: Optional[int] = None) -> int:
    """The default chunk: the largest power of two ≤ :func:`rule_cap` whose saved activations fit
    :func:`rule_activation_bytes` (or ``memory_mb``, the user's ``memory_budget_mb``). ``total``: the
    memory to size for (None: the device's)."""
    room = memory_mb * 2 ** 20 if memory_mb is not None else rule_activation_bytes(device, total)
    return min(rule_cap(device, total), _pow2_floor(room // max(1, bytes_per_image())))


def rule_channels_last(device: torch.device) -> bool:
    """The default memory format for images on ``device`` (RULE_CHANNELS_LAST)."""
    return RULE_CHANNELS_LAST.get(device.type, False)


def memory_limit(device: torch.device, bytes_per_image: Callable[[], int]) -> Optional[int]:
    """The timed search's upper bound on a GPU with no memory budget set: the largest chunk whose
    saved activations take half of the memory free now (the rest: weights, workspaces, the allocator's fragmentation).
    None on a CPU, where the per-image size (one extra forward) is then never computed."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, int(0.5 * free // max(1, bytes_per_image())))


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
        memory_cap = None
        if self.memory_budget_mb is not None:
            memory_cap = max(1, int(self.memory_budget_mb * 2 ** 20 // self.bytes_per_image(model, x)))
        cl = rule_channels_last(x.device) if self.channels_last == "auto" else self.channels_last  # or "measure"
        if "measure" in (self.chunk_setting, cl):
            limit = (self.chunk_setting if isinstance(self.chunk_setting, int) else None) or memory_cap or memory_limit(
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
            return memory_cap
        return self.chunk_setting if memory_cap is None else min(self.chunk_setting, memory_cap)

    def pin(self, chunk: Optional[int], memory_format: str) -> None:
        if memory_format not in ("contiguous", "channels_last"):
            raise ValueError(f"memory_format must be contiguous or channels_last, got {memory_format!r}")
        self.pinned = (None if chunk is None else int(chunk), memory_format)
