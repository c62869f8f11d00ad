"""Short measurements of the bare work (a second or so each), when no rate is on file.

Another job on the machine slows a measurement down, never speeds it up: each is the best of
:data:`WINDOWS` short timings, so a burst of load inflates at most the windows it falls in, and the
machine's load is recorded beside the rate (:func:`flatbench.cell.rates.record_rate`).
"""
from __future__ import annotations

import time

WINDOWS = 3   # short timings per measurement; the fastest is kept


def _window(fn, seconds: float) -> float:
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= seconds and n >= 2:
            return n / dt


def _time(fn, seconds: float) -> float:
    """Calls per second of fn, after one warm-up call: the best of WINDOWS timings, ``seconds`` in all."""
    fn()
    return max(_window(fn, seconds / WINDOWS) for _ in range(WINDOWS))


def measure_craft(model, shape, images: int, device, amp, memory_format: str, seconds: float = 1.0) -> float:
    """Images per second through a forward and an input-gradient backward of ``model`` (the
    bare work of crafting), at ``images`` per forward."""
    import torch
    import torch.nn.functional as F

    x = torch.rand((images, *shape), device=device)
    if memory_format == "channels_last" and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.zeros(images, dtype=torch.long, device=device)

    def step():
        z = x.detach().requires_grad_(True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16,
                            enabled=bool(amp)):
            loss = F.cross_entropy(model(z).float(), y, reduction="sum")
        torch.autograd.grad(loss, z)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return images * _time(step, seconds)


def measure_eval(model, shape, batch: int, device, seconds: float = 0.5) -> float:
    """Images per second through a forward of ``model`` (a defended model: all its votes)."""
    import torch

    x = torch.rand((batch, *shape), device=device)

    @torch.inference_mode()
    def step():
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return batch * _time(step, seconds)
