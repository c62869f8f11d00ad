"""The cost of every cell of a run or a sweep: gradient evaluations (exact), evaluation passes and
projected times, and the sweep's totals."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from flatbench.models.collected import collected_models_of
from flatbench.entry.sweep import sweep_cells
from flatbench.cell.rates import craft_key, eval_key, machine_load, per_forward, rate_note, read_rates, record_rate
from flatbench.entry.planning.measure import WINDOWS, measure_craft, measure_eval

MARGIN = 1.5          # the suggested time limit: the longest cell's projection times this ...


@dataclass
class CellCost:
    """One cell of a plan (the columns of ``--csv``)."""

    cell: int
    overrides: str
    cell_id: str
    status: str               # new | k of n batches crafted | crafted | finished (cached)
    knob: str                 # what budget=B set (n_samples=20, steps=400); '' without a budget
    per_image: int            # gradient evaluations per image of the whole attack
    images_left: int
    grad_evals: int           # forward+backward image passes still to make (crafting)
    eval_passes: int          # forward image passes still to make (evaluation, votes included)
    craft_s: float
    eval_s: float
    projected_s: float
    rate_source: str


def cost_cells(argv: List[str], multirun: bool, seconds: float = 1.0, say=print) -> Tuple[List[CellCost], Dict]:
    """Every cell's cost; measurements (and the models they need) are made once per key."""
    from flatbench.cell.evaluation import TargetModels
    from flatbench.cell.plan import cell_hash, cell_semantic, load_data, pick_device, target_keys
    from flatbench.entry.compose import compose
    from flatbench.entry.settings import load_settings
    from flatbench.cell.store import AdvStore

    t_start = time.perf_counter()
    cells, measured, startup = [], {}, None
    cells_overrides, search = sweep_cells(argv, multirun)
    common = set.intersection(*(set(o) for o in cells_overrides)) if len(cells_overrides) > 1 else set()
    for i, overrides in enumerate(cells_overrides):
        st = load_settings(compose(overrides))
        s, batch = st.cell, st.run.batch_size
        device = pick_device(st.run.device)
        attack = st.build_attack()
        data = load_data(s)
        cell_id = cell_hash(cell_semantic(st, attack, data, device.type))
        cache = st.paths.cache_dir
        store = AdvStore(cache, cell_id)
        bounds = [(lo, min(len(data), lo + batch)) for lo in range(0, len(data), batch)]
        if store.full.exists():
            left, status = [], "crafted"
        else:
            left = [(lo, hi) for lo, hi in bounds if not store.batch_path(lo, hi).exists()]
            status = "new" if len(left) == len(bounds) else f"{len(bounds) - len(left)} of {len(bounds)} batches crafted"
        images_left = sum(hi - lo for lo, hi in left)
        grad_evals = attack.predicted_grad_evals(images_left)
        zoo, keys = st.targets, target_keys(st)
        todo = [k for k in zoo if not store.eval_path(keys[k]).exists()]
        if not left and not todo:
            status = "finished (cached)"
        models = TargetModels(s.surrogate, st.model_options(progress=False), device)
        shape = tuple(data.floats(slice(0, 1)).shape[1:])
        if startup is None:   # what a job pays before its first batch: imports, config, data, the surrogate
            t0 = time.perf_counter()
            models.surrogate()
            startup = (t0 - t_start) / (i + 1) + (time.perf_counter() - t0)
        rates, sources = read_rates(cache), set()
        craft_s = _craft_seconds(attack, s.surrogate, models, data, shape, batch, device, grad_evals, rates, measured,
                                 cache, seconds, sources, say)
        eval_passes, eval_s = _eval_cost(todo, zoo, keys, models, data, shape, batch, device, rates, measured, cache,
                                         seconds, sources)
        knob = f"{s.budget['knob']}={s.budget['value']}" if s.budget else ""
        cells.append(CellCost(i, " ".join(o for o in overrides if o not in common) or "(the defaults)", cell_id, status,
                              knob, attack.predicted_grad_evals(1), images_left, grad_evals, eval_passes,
                              round(craft_s, 2), round(eval_s, 2), round(craft_s + eval_s, 2),
                              "; ".join(sorted(sources)) or "nothing left"))
    return cells, {"startup_s": startup or 0.0, "search": search}


def _rate(key, rates: Dict, measured: Dict, sources: set, measure) -> float:
    """A key's images per second: on file (a cell that ran, or an earlier plan), measured in this plan
    already, or measured now with ``measure()`` and put on file; ``sources`` gets where it came from."""
    if key in rates:
        sources.add(rate_note(rates[key]))
        return rates[key]["per_second"]
    if key not in measured:
        measured[key] = measure()
    load = machine_load()
    sources.add(f"measured now (best of {WINDOWS} timings" + (f", load {load['load']:g} on {load['cpus']} CPUs)"
                                                            if load["load"] is not None else ")"))
    return measured[key]


def _craft_seconds(attack, surrogate, models, data, shape, batch, device, grad_evals, rates, measured, cache, seconds,
                   sources, say) -> float:
    """The crafting time left: its gradient evaluations at the surrogate's rate (0 when nothing is left)."""
    if not grad_evals:
        return 0.0
    attack.model = models.surrogate()
    attack.chunk = attack.resolved_chunk(data.floats(slice(0, min(len(data), batch))).to(device))
    n = per_forward(attack, batch, len(data))
    key = craft_key(surrogate, shape, device.type, attack.amp, n)

    def measure() -> float:
        say(f"flatbench plan: measuring {'+'.join(surrogate)} at {n} images per forward ({device.type}) ...")
        # One forward of an LGV set goes through one collected model (its plain forward averages all of them).
        model = models.surrogate()
        snaps = collected_models_of(model)
        rate = measure_craft(snaps.at(0) if snaps is not None else model, shape, n, device, attack.amp,
                             attack.memory_format, seconds)
        record_rate(cache, key, rate, "plan")
        return rate

    return grad_evals / _rate(key, rates, measured, sources, measure)


def _eval_cost(todo, zoo, keys, models, data, shape, batch, device, rates, measured, cache, seconds,
               sources) -> Tuple[int, float]:
    """(forward image passes, seconds) of the evaluations left: clean and adversarial images per target,
    a randomized-smoothing target's votes included (its measured rate includes them)."""
    passes, total = 0, 0.0
    for k in todo:
        entry = zoo[k]
        defense = entry.get("defense") or {}
        votes = int(defense.get("n", 1)) if defense.get("name") == "smoothing" else 1
        passes += 2 * len(data) * votes
        key = eval_key(keys[k], shape, device.type, batch)

        def measure(entry=entry, key=key) -> float:
            rate = measure_eval(models.get(entry), shape, min(batch, len(data)), device, seconds / 2)
            record_rate(cache, key, rate, "plan")
            return rate

        total += 2 * len(data) / _rate(key, rates, measured, sources, measure)
    return passes, total


def totals(cells: List[CellCost], startup_s: float, search: Optional[Dict[str, int]] = None) -> Dict[str, Any]:
    longest = max((c.projected_s for c in cells), default=0.0)
    tot = {"cells": len(cells), "cells_left": sum(c.status != "finished (cached)" for c in cells),
           "grad_evals": sum(c.grad_evals for c in cells), "projected_s": sum(c.projected_s for c in cells),
           "longest_s": longest, "startup_s": startup_s,
           "timeout_min": max(1, math.ceil((longest * MARGIN + startup_s) / 60))}
    if search:   # n trials, each somewhere inside the corners' range
        n = search["trials"]
        shortest = min((c.projected_s for c in cells), default=0.0)
        mean = tot["projected_s"] / max(1, len(cells))
        tot.update(trials=n, trials_low_s=n * shortest, trials_high_s=n * longest, projected_s=n * mean,
                   grad_evals=round(n * tot["grad_evals"] / max(1, len(cells))))
    tot["device_hours"] = tot["projected_s"] / 3600
    return tot
