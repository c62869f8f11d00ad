"""The crafting and evaluation rates on file (``CACHE/rates.json``), which every finished crafting run
writes and ``flatbench plan`` projects from: low in the package, so that the crafting stage can write
them without importing the planner."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Dict, Optional

from .io import read_json, update_json
from .layout import CacheLayout


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
        rates[key] = {"per_second": float(per_second), "source": source, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
        return rates

    update_json(rates_path(cache_dir), change)


def per_forward(attack, batch_size: int, n_images: int) -> int:
    """Images in one forward of the surrogate while crafting: the batch times the estimator's
    widest forward (its neighbours or views) times the transforms' copies, cut to the chunk."""
    width = attack.estimator.width * attack.copies
    images = min(batch_size, n_images) * width
    return max(1, min(images, attack.chunk) if attack.chunk else images)
