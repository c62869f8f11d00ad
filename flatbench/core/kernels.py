"""The CPU kernel paths of the command line: the same images on every x86-64 CPU with AVX2 or better.

PyTorch, oneDNN and MKL each pick the vector width of their CPU kernels from the processor they
find, and a wider kernel sums in another order: on the default experiment, ATen's kernels at
``default`` instead of ``avx2`` moved 10 of the 24 README-test entries by up to a point, oneDNN
limited to SSE4.1 or AVX moved up to 422 pixels of a cell, MKL's ``COMPATIBLE`` branch up to 27
(``scripts/kernel_paths.py``; README, "The same table on every machine"). Two CPUs, an AVX-512 one and an
AVX2-only AMD EPYC, therefore crafted different images from one command (16 entries of the
README's digits-cnn rows one to three images apart).

The command line pins all three to their AVX2 paths before torch runs its first operation:

- ``ATEN_CPU_CAPABILITY=avx2``: PyTorch's own vectorised kernels (element-wise ops, reductions);
- ``ONEDNN_MAX_CPU_ISA=AVX2``: oneDNN's JIT kernels (convolutions, pooling, channels_last);
- ``MKL_CBWR=AVX2``: MKL's conditional numerical reproducibility branch (matrix products): the
  same results on every processor that runs that branch.

``FLATBENCH_KERNELS`` chooses: ``avx2`` (the default), ``default`` (the paths every x86-64 CPU has:
ATen ``default``, oneDNN ``SSE41``, MKL ``COMPATIBLE``; slower) or ``native`` (leave each library
to choose). A variable the user set keeps the user's value. A CPU without AVX2 (or not x86-64)
is left native, since forcing a path it lacks would stop the process. What was in effect goes
into each cell's ``cell.json`` (``kernels``), never into its id.

Applied by the command line in its own process (:mod:`flatbench.entry.cli`, imported first by every
SLURM or submitit task too); never by the API, which does not change the process of the notebook
it runs in. A notebook gets the same by exporting the three variables before Python starts.
"""
from __future__ import annotations

import os
import platform
from typing import Dict

VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR")
MODES: Dict[str, Dict[str, str]] = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"},
    "default": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE"},
    "native": {},
}
DEFAULT_MODE = "avx2"

_pinned: Dict[str, str] = {}
_effective = ""   # the mode pin_kernels applied: "avx2", "default" or "native" (also when it could not pin)


def cpu_flags() -> set:
    """The processor's feature flags (Linux's /proc/cpuinfo); empty where unreadable."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def mode() -> str:
    value = os.environ.get("FLATBENCH_KERNELS", DEFAULT_MODE).strip().lower() or DEFAULT_MODE
    if value not in MODES:
        raise SystemExit(f"flatbench: error: FLATBENCH_KERNELS={value!r} is not one of {', '.join(MODES)}")
    return value


def pin_kernels() -> Dict[str, str]:
    """Set the kernel-selection variables of :data:`MODES` (once per process) where the user did not;
    returns the ones this call set. A no-op on CPUs without AVX2 and off x86-64."""
    global _pinned, _effective
    if _effective:
        return dict(_pinned)
    name = mode()
    wanted = MODES[name]
    if not wanted or platform.machine().lower() not in ("x86_64", "amd64") \
            or (name == "avx2" and not {"avx2", "fma"} <= cpu_flags()):
        _effective = "native"
        return {}
    _effective = name
    _pinned = {k: v for k, v in wanted.items() if k not in os.environ}
    os.environ.update(_pinned)
    return dict(_pinned)


def kernels_in_effect() -> Dict[str, str]:
    """What a cell records: the mode pin_kernels applied ("native" in a process that never called it,
    such as the API's), each variable's value ("(user)" where the user set it) and the capability
    PyTorch actually dispatches to."""
    import torch

    out = {"mode": _effective or "native", "cpu": cpu_model(),
           "aten_capability": str(torch.backends.cpu.get_cpu_capability()), "threads": str(torch.get_num_threads())}
    for var in VARIABLES:
        value = os.environ.get(var)
        out[var] = "" if value is None else value + ("" if var in _pinned else " (user)")
    return out
