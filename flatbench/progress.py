"""A line per finished cell of a sweep: how many of how many cells are done, how many failed,
and the time left, projected.

Every cell of a multirun, when it ends (finished, skipped or failed), adds its record (its
seconds and the gradient evaluations it made now) to
``SWEEP_DIR/.flatbench/progress.json`` under a lock and prints the line from all records so
far, so it works alike for the basic launcher, joblib's workers and SLURM jobs on a shared
file system (where each job's log shows it). The sweep's cells are expanded once, from the
sweep's own ``multirun.yaml`` (its command line and the sweeper's params), with each cell's
gradient evaluations from ``flatbench plan``'s exact count; the time left is those of the cells
not yet done times the seconds per gradient evaluation of the cells done so far: the plan's
projection corrected by what the sweep has measured. An Optuna search, whose cells are not
known ahead, counts its trials and projects from the mean cell time.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from .layout import SweepLayout

PROGRESS = SweepLayout.PROGRESS


def _key(overrides: List[str]) -> str:
    return " ".join(sorted(overrides))


def expand_sweep(sweep_dir: Path) -> Dict[str, Any]:
    """{"cells": {key: grad_evals}, "total": n} for the sweep in ``sweep_dir`` (its multirun.yaml)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from .attacks import build_attack
    from .cell.plan import load_data
    from .compose import compose
    from .config import attack_kwargs, resolve

    cfg = OmegaConf.load(Path(sweep_dir) / SweepLayout.MULTIRUN)
    task = list(cfg.hydra.overrides.task)
    sweeper = cfg.hydra.sweeper
    if "optuna" in str(sweeper.get("_target_", "")).lower():
        return {"cells": {}, "total": int(sweeper.get("n_trials") or 0)}
    given = {a.split("=", 1)[0].lstrip("+~") for a in task if "=" in a}
    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items() if k not in given]
    grid = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params + task), None)[0]
    cells = {}
    for overrides in grid:
        try:
            s = resolve(compose(overrides))
            cells[_key(overrides)] = build_attack(None, **attack_kwargs(s)).predicted_grad_evals(len(load_data(s)))
        except Exception:  # noqa: BLE001 - a cell that cannot even be composed fails on its own; count it, cost unknown
            cells[_key(overrides)] = None
    return {"cells": cells, "total": len(grid)}


def record_progress(sweep_dir: str, overrides: List[str], ok: bool, seconds: float, grad_evals: int = 0) -> Optional[str]:
    """Add this cell's record and return the progress line (None when the file cannot be written)."""
    from .io import atomic_write_text, locked

    path = SweepLayout.progress(sweep_dir)
    try:
        with locked(SweepLayout.progress_lock(sweep_dir)):
            try:
                state = json.loads(path.read_text())
            except (OSError, ValueError):
                state = None
            if state is None or "cells" not in state:
                state = {**expand_sweep(Path(sweep_dir)), "done": {}}
            state["done"][_key(overrides)] = {"ok": bool(ok), "seconds": float(seconds), "grad_evals": int(grad_evals),
                                              "when": time.time()}
            atomic_write_text(path, json.dumps(state, indent=1))
    except OSError:
        return None
    return progress_line(state)


def progress_line(state: Dict[str, Any]) -> str:
    """The line, from the expanded sweep and the records of the cells done (pure)."""
    cells, done, total = state["cells"], state["done"], int(state["total"]) or len(state["done"])
    failed = sum(not r["ok"] for r in done.values())
    # The cells that crafted now (a finished or cached cell costs next to nothing and says nothing of the rate).
    ran = {k: r for k, r in done.items() if r["ok"] and r.get("grad_evals", 0) > 0}
    evals_done = sum(r["grad_evals"] for r in ran.values())
    seconds_done = sum(r["seconds"] for r in ran.values())
    left_cells = [k for k in cells if k not in done] if cells else []
    n_left = len(left_cells) if cells else max(0, total - len(done))
    if n_left == 0:
        eta = "nothing left"
    elif cells and evals_done > 0 and all(cells.get(k) is not None for k in left_cells):
        left = sum(cells[k] for k in left_cells) * seconds_done / evals_done
        eta = (f"about {_fmt(left)} of cell time left (projected: the plan's gradient evaluations of the "
               f"{n_left} cells left at the {len(ran)} finished cells' seconds per evaluation)")
    elif ran:
        left = n_left * seconds_done / len(ran)
        eta = f"about {_fmt(left)} of cell time left (projected: {n_left} cells at the finished cells' mean time)"
    else:
        eta = "time left not yet known (no cell has run)"
    return f"flatbench: sweep: {len(done)} of {total} cells done ({failed} failed); {eta}"


def _fmt(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else (f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h")
