"""The crafting and evaluation rates on file (``CACHE/rates.json``), which every finished crafting run
writes and ``flatbench plan`` projects from: low in the package, so that the crafting stage can write
them without importing the planner."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Dict, Optional

from flatbench.core.io import read_json, update_json
from flatbench.core.layout import CacheLayout


def rates_path(cache_dir) -> Path:
    return CacheLayout.rates(cache_dir)


def craft_key(surrogate, shape, device_type: str, amp, per_forward: int) -> str:
    return f"craft|{'+'.join(surrogate)}|{'x'.join(map(str, shape))}|{device_type}|{amp or 'fp32'}|{per_forward}"


def eval_key(target_key: str, shape, device_type: str, batch: int) -> str:
    return f"eval|{target_key}|{'x'.join(map(str, shape))}|{device_type}|{batch}"


def read_rates(cache_dir) -> Dict[str, Dict[str, Any]]:
    return read_json(rates_path(cache_dir))


def record_rate(cache_dir, key: str, per_second: float, source: str) -> None:
    """Keep a measured rate (images per second) under ``key``, under the file's lock; a rate
    from a finished cell replaces a plan's short measurement, not the other way round."""
    if not (per_second > 0 and math.isfinite(per_second)):
        return

    def change(rates: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        if rates.get(key, {}).get("source", "").startswith("cell") and not source.startswith("cell"):   # keep the cell's
            return None
        rates[key] = {"per_second": float(per_second), "source": source, "when": time.strftime("%Y-%m-%d %H:%M:%S"),
                      **machine_load()}
        return rates

    update_json(rates_path(cache_dir), change)


def machine_load() -> Dict[str, Any]:
    """The 1-minute load average and the CPUs, recorded with a rate: a rate measured under load is slower
    than the machine (the plan says so)."""
    import os

    try:
        load = round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):   # not on every platform
        load = None
    return {"load": load, "cpus": os.cpu_count()}


def rate_note(entry: Dict[str, Any], now: Optional[float] = None) -> str:
    """Where a rate on file came from, how old it is and the load it was measured under:
    'on file: cell 1a2b (3.2 h old, load 1.9 on 2 CPUs)'."""
    age = ""
    try:
        seconds = (now or time.time()) - time.mktime(time.strptime(entry["when"], "%Y-%m-%d %H:%M:%S"))
        age = f"{seconds / 60:.0f} min old" if seconds < 5400 else (f"{seconds / 3600:.1f} h old" if seconds < 172800
                                                                   else f"{seconds / 86400:.0f} days old")
    except (KeyError, ValueError, OverflowError):
        pass
    load = f"load {entry['load']:g} on {entry['cpus']} CPUs" if entry.get("load") is not None else ""
    detail = ", ".join(x for x in (age, load) if x)
    return f"on file: {entry['source']}" + (f" ({detail})" if detail else "")


def per_forward(attack, batch_size: int, n_images: int) -> int:
    """Images in one forward of the surrogate while crafting: the batch (with the batches packed
    beside it, :mod:`flatbench.attacks.packing`) times the estimator's widest forward (its
    neighbours or views) times the transforms' copies, cut to the chunk."""
    from flatbench.attacks.packing import pack_size   # here: the rate file's readers need no torch

    width = attack.estimator.width * attack.copies
    images = min(batch_size * pack_size(attack, batch_size), n_images) * width
    return max(1, min(images, attack.chunk) if attack.chunk else images)
