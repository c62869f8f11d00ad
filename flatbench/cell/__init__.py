"""One cell: a short sequence of stages, each in its own module, passing one :class:`~.plan.Cell`.

    settings    the config checked and typed, once, by the entry point (flatbench/entry/settings.py)
    plan        the attack, cell id, and what exists: finished rows, the stored set, cached
                evaluations (the one reuse rule: by cell id)                    plan.py
    check       every target still to evaluate, before any batch is crafted     evaluation.py
    craft       the adversarial set, batch by batch with checkpoints           crafting.py
    evaluate    each target's predictions, through the evaluation cache        evaluation.py
    flatness    the surrogate's flatness at the set (flatness=on)              flatness.py
    record      rows, predictions.csv, the set, cell.json (last)               recording.py

:func:`run_cell` runs them in that order and owns the logger's lifecycle: the logger is
finished, as failed or not, whatever a stage raises, and the exception goes on (Hydra's
multirun and the command line decide what a failure means).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, Optional

import pandas as pd
import torch
from flatbench.cell.dist import world
from flatbench.cell.loggers import build_logger
from flatbench.cell.settings import Settings
from flatbench.cell.signals import StopRequest
from flatbench.cell import crafting
from flatbench.cell.evaluation import TargetModels, check_targets, evaluate_cell
from flatbench.cell.flatness_stage import flatness_cell
from flatbench.cell.plan import Cell, plan_cell
from flatbench.cell.recording import record_cell, record_skipped

log = logging.getLogger("flatbench")

__all__ = ["run_cell", "cell_objective", "Cell"]


def run_cell(st: Settings, out_dir: Path, mode: str = "run", sweep: Optional[Dict[str, Any]] = None,
             stop: Optional[StopRequest] = None) -> Optional[pd.DataFrame]:
    """Run the cell that ``st`` describes (:func:`flatbench.entry.settings.load_settings`, which the entry
    points call on the composed config) into ``out_dir``; returns its rows (None on ranks > 0).

    ``mode="run"`` crafts what is missing (resuming from finished batches) and evaluates the
    (cell, target) pairs without a cached evaluation; ``mode="evaluate"`` never crafts and
    fails when the cell has no stored adversarial set. A cell already finished in ``out_dir``
    with the same id and targets is skipped; ``force=true`` recomputes everything. ``stop``: set
    by SIGTERM/SIGINT (see :mod:`flatbench.cell.signals`), crafting stops between batches.
    """
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    w = world()
    logger = build_logger(st.logger) if w.main else build_logger({"name": "csv"})
    failed = True
    try:
        cell = plan_cell(st, out_dir, mode, w)
        if cell.done is not None:
            log.info("cell %s already finished in %s: skipping (force=true recomputes)", cell.cell_id, out_dir)
            failed = False
            return cell.done if w.main else None
        if w.main:
            logger.start(st.config(), out_dir,
                         f"{cell.attack.label}-{'+'.join(cell.settings.surrogate)}-eps{cell.settings.eps:g}", sweep)
            record_skipped(cell)
        models = TargetModels(cell.settings.surrogate, st.model_options(), cell.device, cell.data)
        if cell.stored is None or cell.snap_todo:
            cell.attack.model = torch.compile(models.surrogate()) if st.run.compile else models.surrogate()
        built = check_targets(cell, models, st.run.pretrained)
        log.info("cell %s: startup %.1f s (%d of %d targets built at startup)", cell.cell_id,
                 time.perf_counter() - t_start, len(built), len(cell.todo))
        log.info("cell %s: %s on %s, %d images of %s, eps=%g/255, device=%s%s; %d target(s) to evaluate, %d cached",
                 cell.cell_id, cell.attack.label, "+".join(cell.settings.surrogate), len(cell.data), cell.data.name,
                 cell.settings.eps, cell.device, f", rank {w.rank}/{w.size}" if w.active else "", len(cell.todo),
                 len(cell.zoo) - len(cell.todo))
        crafting.craft_cell(cell, st, w, models.surrogate, stop)
        evaluate_cell(cell, models, built, st.run.batch_size, w, None if cell.force else st.paths.cache_dir,
                      st.run.progress)
        if not w.main:
            failed = False
            return None
        flatness_cell(cell, st, models)
        df = record_cell(cell, st)
        df.attrs["grad_evals_now"] = int(cell.attack.grad_evals)   # crafted now (0 when the set was reused)
        df.attrs["craft_seconds_now"] = float(cell.craft_meta.get("craft_seconds", 0.0)) if cell.attack.grad_evals else 0.0
        logger.log_rows(df)
        failed = False
        return df
    finally:
        logger.finish(failed=failed)


def cell_objective(df: pd.DataFrame, objective: str) -> float:
    """What the cell returns to a sweeper: the mean ASR (%) over the objective's targets; NaN
    when the cell has no target of that role (Optuna records such a trial as failed)."""
    rows = df if objective == "all" else df[df["target"] == objective] if objective in set(df["target"]) \
        else df[df["role"] == objective]
    if rows.empty:
        log.warning("objective %s: this cell has no target of that role (roles: %s); returning NaN", objective,
                    ", ".join(dict.fromkeys(df["role"])))
        return float("nan")
    return float(rows["asr"].mean())
