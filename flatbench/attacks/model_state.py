"""The user's model is theirs: an attack borrows it and hands it back as it came.

During the attack the model is in eval mode (BatchNorm uses its running statistics and does not
update them; dropout is off, so the attack is deterministic under its seed) and its parameters
do not require gradients (autograd then computes the input gradient only). The attack may also
convert its 4-D weights to channels_last. On the way out, also when the attack raises, every
submodule gets its own mode back, every parameter its ``requires_grad``, and every parameter
and buffer its own tensor object (so its memory format, device and storage are the caller's).
Nothing else is written: weights and statistics are read, never assigned, and no attribute is
added to the model.

Attacking in training mode is not offered: BatchNorm would fold adversarial batches into the
user's running statistics, and dropout would make the images depend on the draw of masks that
no seed of flatbench's controls. (Dropout as a model augmentation, as in Ghost Networks, would
be a part of its own, with keyed masks.)
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, List, Optional

import torch
from torch import nn


@contextmanager
def borrowed(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and frozen parameters inside the block; the caller's state restored on exit."""
    modules = list(model.modules())
    modes = [(m, m.training) for m in modules]
    entries = [(m, slot, name, t, t.data if isinstance(t, nn.Parameter) else None)
               for m in modules for slot in ("_parameters", "_buffers")
               for name, t in getattr(m, slot).items() if t is not None]
    wants = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in wants:
            p.requires_grad_(False)
        yield model
    finally:
        for m, slot, name, t, data in entries:
            if getattr(m, slot).get(name) is not t:   # replaced (Module.to with swapped tensors)
                getattr(m, slot)[name] = t
            elif data is not None and (t.data.data_ptr() != data.data_ptr() or t.data.stride() != data.stride()):
                t.data = data                        # Module.to(memory_format=...) swaps .data in place
        for p, wanted in wants:
            p.requires_grad_(wanted)
        for m, training in modes:
            m.training = training


def set_memory_format(model: nn.Module, channels_last: bool) -> nn.Module:
    """Put the model's 4-D weights in channels_last (or contiguous), converting only when some
    are not; in place, as ``Module.to`` does. Call it inside :func:`borrowed`, which undoes it."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if any(p.dim() == 4 and not p.is_contiguous(memory_format=fmt) for p in model.parameters()):
        model.to(memory_format=fmt)
    return model


def _deterministic_algorithms(mode: bool, warn_only: bool = False) -> None:
    """``torch.use_deterministic_algorithms(mode, warn_only=...)``, without importing the compiler
    where it is not loaded. Inductor's flag only matters to code that torch.compile compiles, and
    torch.compile loads torch._dynamo before it compiles anything: when torch._dynamo is loaded, the
    public call sets both flags; otherwise only the kernels' flag, and inductor, loaded later,
    starts from its own default (as it would after the call restores the caller's setting)."""
    import sys

    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None or "torch._dynamo" in sys.modules or "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    else:
        setter(mode, warn_only=warn_only)


@contextmanager
def deterministic_kernels() -> Iterator[None]:
    """Deterministic kernels for the attack; the caller's settings restored after.

    - ``torch.backends.cudnn.deterministic``: cuDNN's default backward convolutions may sum with
      atomics. On an H200 two identical default PGN calls on ResNet-50 differed in 447 of
      2,408,448 8-bit pixels, and in none with this flag, at the same speed.
    - ``torch.use_deterministic_algorithms(True, warn_only=True)``: PyTorch's own kernels that
      accumulate with atomics switch to deterministic implementations; among them the bilinear
      resize's backward, which DIM uses to return to W. Without it PGN+DIM+TIM on Inception-v3
      differed in 428,327 of 4,291,248 pixels between two identical calls (H200). Ops with no
      deterministic implementation warn rather than fail.
    - ``CUBLAS_WORKSPACE_CONFIG`` is set (if unset) to ``:4096:8``, which cuBLAS needs for
      repeatable matrix products; it takes effect where cuBLAS starts after it.

    Figures: scripts/determinism_check.py, docs/benchmarks.md. On a CPU the kernels flatbench uses
    give the same images either way (measured on digits PGN and PGN+DIM+TIM).

    The flag is set through :func:`_deterministic_algorithms`: ``torch.use_deterministic_algorithms``
    also imports ``torch._inductor`` to set inductor's flag, about 1 s that a fresh process paid
    inside its first attack call.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    cudnn = torch.backends.cudnn.deterministic
    algorithms = torch.are_deterministic_algorithms_enabled()  # a caller's own setting (strict or not) is kept
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.backends.cudnn.deterministic = True
    if not algorithms:
        _deterministic_algorithms(True, warn_only=True)
        # Filling every new tensor with NaN is a debugging aid of deterministic mode, not part of
        # determinism (the loop reads no uninitialised memory); it cost 6-10% on a CPU.
        torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic = cudnn
        if not algorithms:
            _deterministic_algorithms(False)
            torch.utils.deterministic.fill_uninitialized_memory = fill


def per_step_models(model):
    """The model behind ``model`` (also through torch.compile's wrapper) when it is another network at
    each step, else None. Such a surrogate (an LGV set's collected models, flatbench.models.lgv) says
    so with ``per_step = True`` and offers ``len()``, ``start_of(seed)`` (where a batch keyed ``seed``
    starts in its cycle) and ``at(step, start)`` (the network step ``step`` takes its gradient
    through); the loop asks it, and imports no model source."""
    inner = getattr(model, "_orig_mod", model)
    return inner if getattr(inner, "per_step", False) else None


def ensemble_members(model) -> List[torch.nn.Module]:
    """The models of a surrogate ensemble (also through torch.compile's wrapper); [] for one model."""
    members = getattr(getattr(model, "_orig_mod", model), "members", None)
    return list(members) if isinstance(members, torch.nn.ModuleList) else []


def ensemble_size(model) -> Optional[int]:
    """How many members a surrogate ensemble has (CWA's K); None for one model."""
    return len(ensemble_members(model)) or None
