"""The loop's own settings, checked alike for the command line (``config.resolve``) and for
:class:`~flatbench.attacks.loop.Attack`, with one message each."""
from __future__ import annotations

from typing import Sequence, Tuple

from flatbench.core.registry import check_range
from flatbench.attacks.threat import THREATS


def check_snapshots(at: Sequence[int], steps: int, key: str = "snapshots") -> Tuple[int, ...]:
    """The steps (1-based) whose examples a run keeps besides the last, sorted; T itself is always kept."""
    at = list(at or ())
    ok = all(isinstance(t, int) and not isinstance(t, bool) and 1 <= t <= steps for t in at)
    check_range(key, at, ok, f"a list of steps between 1 and T = {steps}, e.g. [2,5] (T itself is always kept)")
    return tuple(sorted(set(at) - {steps}))


def check_loop_settings(*, steps, norm, chunk, memory_budget_mb, amp, channels_last) -> None:
    """The loop's own settings, checked here for the command line (``config.resolve``) and for
    :class:`Attack` alike, with one message each."""
    check_range("steps", steps, isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1, "steps >= 1")
    check_range("norm", norm, norm in THREATS, " | ".join(THREATS))
    check_range("chunk", chunk, chunk is None or chunk in ("auto", "measure") or (
        isinstance(chunk, int) and not isinstance(chunk, bool) and chunk >= 1),
        "an integer >= 1, auto (by rule), measure (timed), or null")
    check_range("memory_budget_mb", memory_budget_mb, memory_budget_mb is None or (
        isinstance(memory_budget_mb, (int, float)) and not isinstance(memory_budget_mb, bool) and memory_budget_mb > 0),
        "> 0 (MiB) or null")
    check_range("amp", amp, amp in (None, "bf16", "fp16"), "null | bf16 | fp16")
    check_range("channels_last", channels_last, channels_last in ("auto", "measure", True, False)
                and channels_last is not None, "auto (by rule) | measure (timed) | true | false")


def check_part_lengths(parts) -> None:
    """Each part's declared lengths, fractions of [0,1] under linf: one above the whole range is 1/255
    units written where a fraction is read (flatbench/core/units.py), refused naming both readings."""
    from flatbench.core.units import api_length

    for part in parts:
        decl, params = getattr(part, "declaration", None), getattr(part, "params", None)
        if decl is None or params is None:
            continue
        for k, v in params().items():
            if k in decl.names() and decl.param(k).length:
                api_length(k, v, "linf")
