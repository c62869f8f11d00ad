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

import atexit
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.experimental.callback import Callback

from flatbench.core.layout import SweepLayout



def _key(overrides: List[str]) -> str:
    return " ".join(sorted(overrides))


def expand_sweep(sweep_dir: Path) -> Dict[str, Any]:
    """{"cells": {key: grad_evals}, "total": n} for the sweep in ``sweep_dir`` (its multirun.yaml)."""
    from omegaconf import OmegaConf

    from flatbench.cell.plan import load_data
    from flatbench.entry.compose import compose
    from flatbench.entry.settings import load_settings
    from flatbench.entry.sweep import grid, parse, sweep_overrides

    cfg = OmegaConf.load(Path(sweep_dir) / SweepLayout.MULTIRUN)
    task = list(cfg.hydra.overrides.task)
    sweeper = cfg.hydra.sweeper
    if "optuna" in str(sweeper.get("_target_", "")).lower():
        return {"cells": {}, "total": int(sweeper.get("n_trials") or 0), "task": task}
    cells_overrides = grid(parse(sweep_overrides(task, sweeper.get("params"))))
    cells = {}
    for overrides in cells_overrides:
        try:
            st = load_settings(compose(overrides))
            cells[_key(overrides)] = st.build_attack().predicted_grad_evals(len(load_data(st.cell)))
        except Exception:  # noqa: BLE001 - a cell that cannot even be composed fails on its own; count it, cost unknown
            cells[_key(overrides)] = None
    return {"cells": cells, "total": len(cells_overrides), "task": task}


def sweep_task(sweep_dir: Path) -> List[str]:
    """The command line's overrides of the sweep now in ``sweep_dir`` (its multirun.yaml)."""
    from omegaconf import OmegaConf

    return list(OmegaConf.load(Path(sweep_dir) / SweepLayout.MULTIRUN).hydra.overrides.task)


def record_progress(sweep_dir: str, overrides: List[str], ok: bool, seconds: float, grad_evals: int = 0,
                    craft_seconds: Optional[float] = None) -> Optional[str]:
    """Add this cell's record and return the progress line (None when the file cannot be written).
    ``craft_seconds``: the part of ``seconds`` spent crafting (None: not known)."""
    from flatbench.core.io import update_json

    def change(state: Dict[str, Any]) -> Dict[str, Any]:
        # A sweep directory run again with another command line is another sweep: expand it afresh and
        # keep only the records of cells it still has (none of an Optuna search's, whose cells are not known).
        if "cells" not in state or state.get("task") != sweep_task(Path(sweep_dir)):
            old = state.get("done") or {}
            state = {**expand_sweep(Path(sweep_dir)), "done": {}}
            state["done"] = {k: v for k, v in old.items() if k in state["cells"]}
        state["done"][_key(overrides)] = {"ok": bool(ok), "seconds": float(seconds), "grad_evals": int(grad_evals),
                                          "when": time.time(),
                                          **({} if craft_seconds is None else {"craft_seconds": float(craft_seconds)})}
        return state

    state = update_json(SweepLayout.progress(sweep_dir), change, lock=SweepLayout.progress_lock(sweep_dir), sort_keys=False)
    if state is None:
        return None
    return progress_line(state)


def progress_line(state: Dict[str, Any]) -> str:
    """The line, from the expanded sweep and the records of the cells done (pure)."""
    cells, done, total = state["cells"], state["done"], int(state["total"]) or len(state["done"])
    if cells:   # only this sweep's cells count (records of another command line are not)
        done = {k: r for k, r in done.items() if k in cells}
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
        evals_left = sum(cells[k] for k in left_cells)
        if all("craft_seconds" in r for r in ran.values()):
            # Crafting at its own rate; evaluation and flatness, which do not scale with the crafting
            # evaluations, at their own mean per cell.
            craft = sum(r["craft_seconds"] for r in ran.values())
            besides = (seconds_done - craft) / len(ran)
            left = evals_left * craft / evals_done + n_left * max(0.0, besides)
            eta = (f"about {_fmt(left)} of cell time left (projected: the plan's gradient evaluations of the "
                   f"{n_left} cells left at the {len(ran)} finished cells' crafting seconds per evaluation, plus "
                   f"their mean {_fmt(max(0.0, besides))} per cell besides crafting)")
        else:
            left = evals_left * seconds_done / evals_done
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


class SweepProgress(Callback):
    """A Hydra callback (``hydra.callbacks.sweep_progress`` in config.yaml): while a launcher runs the
    cells as jobs elsewhere (submitit: SLURM, or local processes), the terminal that launched the sweep
    prints the sweep's line (cells done, failed, time left) each time a cell ends. The line is read from
    the sweep's own progress records (:mod:`flatbench.entry.sweep_progress`), which each cell adds to when it ends;
    with the basic launcher the cells run in this process and print it themselves."""

    POLL_S = 2.0

    def __init__(self, poll_s: float = POLL_S):
        super().__init__()
        self.poll_s = float(poll_s)
        self._stop = None
        self._thread = None

    def on_multirun_start(self, config, **kwargs) -> None:
        import threading

        if "submitit" not in str(config.hydra.launcher.get("_target_", "")):
            return
        path = SweepLayout.progress(str(config.hydra.sweep.dir))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(path, self._done(path)), daemon=True,
                                        name="flatbench-sweep-progress")
        self._thread.start()
        atexit.register(self._finish)   # a sweep with failed cells ends by raising, past on_multirun_end

    def on_multirun_end(self, config, **kwargs) -> None:
        self._finish()

    # submitit pickles the Hydra context, this callback included, into every job: the watcher stays here.
    def __getstate__(self):
        return {"poll_s": self.poll_s}

    def __setstate__(self, state):
        self.__init__(state["poll_s"])

    def _finish(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._stop.set()
            self._thread.join(timeout=10 * self.poll_s)

    @staticmethod
    def _done(path: Path) -> int:
        from flatbench.core.io import read_json

        return len(read_json(path).get("done") or {})

    def _watch(self, path: Path, seen: int) -> None:
        """Print the line whenever the records count more finished cells than last printed (records a
        rerun of the sweep found on file are not news), and once more at the end."""
        from flatbench.core.io import read_json

        while True:
            stopping = self._stop.wait(self.poll_s)
            state = read_json(path)
            done = len(state.get("done") or {})
            if done > seen and "cells" in state:
                print(progress_line(state), flush=True)
                seen = done
            if stopping:
                return
