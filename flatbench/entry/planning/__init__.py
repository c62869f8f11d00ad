"""``flatbench plan``: what a run or a sweep will cost, before it runs.

    flatbench plan method=pgn surrogate=digits-resnet          # one cell
    flatbench plan -m experiment=digits                        # the sweep a -m run would make
    flatbench plan -m experiment=digits --csv plan.csv         # every column, for scripts
    flatbench plan -m experiment=digits --wide                 # every column, printed (wider than 100)

It takes the overrides a run takes (and, with ``-m``, the sweeper's grid: the experiment's
``hydra.sweeper.params`` and comma lists on the command line; for an Optuna search, the
corners of its space, which bound each trial's cost, and its ``n_trials``). For every cell it prints the
cell id; what is already done (the stored set, finished batches, cached evaluations), so a
half-finished sweep counts only what is left; the gradient evaluations its attack will make
(exactly: :meth:`Attack.predicted_grad_evals`, from each part's declared cost); the forward
passes of the evaluation, target by target (randomized smoothing's votes included); and the
**projected** crafting and evaluation times from measured rates: a rate on file
(``CACHE/rates.json``: written by every finished crafting run, and by earlier plans) for the
same surrogate, input shape, device type, precision and images per forward, or else a
measurement of about a second per model, made now and named as such. Then the totals and a
suggested ``hydra.launcher.timeout_min``: the longest cell's projection with a margin, plus the
startup that every (re)start of a job pays again.

One module per job: the rates on file (``flatbench/cell/rates.py``, which crafting writes), short
measurements (``measure.py``), the cells' cost (``cost.py``) and the command line (``command.py``).

Projections are projections: flatness measurements (``flatness=on``) and W&B are not in them,
and the attack's own overheads (sign, projection, noise) are only in rates that come from
finished cells.
"""
from __future__ import annotations

from flatbench.entry.planning.cost import MARGIN, CellCost, cost_cells, totals
from flatbench.entry.planning.command import plan_main, render
from flatbench.entry.planning.measure import measure_craft, measure_eval

__all__ = ["MARGIN", "CellCost", "cost_cells", "totals", "plan_main", "render", "measure_craft", "measure_eval"]
